//! Ogg-Opus (RFC 7845): pages through the `ogg` crate, packets through libopus
//! at 48 kHz. The `OpusHead` pre-skip is dropped from the start, its output
//! gain applied, and the final page's granule position trims the end.

use std::io::Cursor;

use super::decode::{DecodeError, Output};

/// Opus always decodes at this rate here (RFC 7845 §4).
pub(super) const RATE: u32 = 48_000;
/// Longest Opus packet: 120 ms at 48 kHz.
const MAX_FRAME: usize = 5_760;

/// Whether `bytes` start like an Ogg stream whose first packet is an `OpusHead`.
pub(super) fn is_ogg_opus(bytes: &[u8]) -> bool {
    if bytes.len() < 27 || &bytes[..4] != b"OggS" {
        return false;
    }
    // The first packet follows the 27-byte page header and its segment table.
    let start = 27 + bytes[26] as usize;
    bytes.get(start..start + 8) == Some(&b"OpusHead"[..])
}

/// The identification header (RFC 7845 §5.1), as far as decoding needs it.
#[derive(Debug, Clone, Copy)]
struct Head {
    channels: usize,
    pre_skip: u64,
    /// Q7.8 dB.
    output_gain: i16,
}

fn parse_head(p: &[u8]) -> Result<Head, DecodeError> {
    let corrupt = |what: &str| DecodeError::Corrupt(format!("OpusHead: {what}"));
    if p.len() < 19 || &p[..8] != b"OpusHead" {
        return Err(corrupt("shorter than 19 bytes"));
    }
    let version = p[8];
    if version >> 4 != 0 {
        return Err(DecodeError::Unsupported(format!("Ogg-Opus version {version} (only major version 0 exists)")));
    }
    let channels = p[9] as usize;
    if channels == 0 {
        return Err(corrupt("zero channels"));
    }
    let pre_skip = u16::from_le_bytes([p[10], p[11]]) as u64;
    let output_gain = i16::from_le_bytes([p[16], p[17]]);
    let family = p[18];
    // One Opus stream carrying one or two channels is all a plain decoder
    // takes: family 0, or family 1/255 laid out the same way.
    let plain = match family {
        0 => channels <= 2,
        _ => {
            let table = p.get(19..21 + channels).ok_or_else(|| corrupt("channel mapping table cut short"))?;
            let (streams, coupled, mapping) = (table[0] as usize, table[1] as usize, &table[2..]);
            channels <= 2
                && streams == 1
                && coupled == channels - 1
                && mapping.iter().enumerate().all(|(i, &m)| m as usize == i)
        }
    };
    if !plain {
        return Err(DecodeError::Unsupported(format!(
            "Ogg-Opus with {channels} channels in mapping family {family} (multistream Opus); send mono or stereo"
        )));
    }
    Ok(Head { channels, pre_skip, output_gain })
}

fn ogg_error(e: ogg::OggReadError) -> DecodeError {
    match e {
        ogg::OggReadError::ReadError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeError::Truncated("an Ogg page is cut short".into())
        }
        ogg::OggReadError::HashMismatch(..) => DecodeError::Corrupt("an Ogg page fails its CRC check".into()),
        other => DecodeError::Corrupt(format!("Ogg: {other}")),
    }
}

/// Decodes a whole Ogg-Opus file into `out`, mono at 48 kHz.
pub(super) fn decode(bytes: &[u8], out: &mut Output<'_>) -> Result<(), DecodeError> {
    let mut reader = ogg::PacketReader::new(Cursor::new(bytes));
    let head_packet =
        reader.read_packet().map_err(ogg_error)?.ok_or_else(|| DecodeError::Truncated("no OpusHead packet".into()))?;
    let serial = head_packet.stream_serial();
    let head = parse_head(&head_packet.data)?;
    let mut tags_seen = false;

    let layout = if head.channels == 1 { opus::Channels::Mono } else { opus::Channels::Stereo };
    let opus_err = |e: opus::Error| DecodeError::Corrupt(format!("Opus: {e}"));
    let mut decoder = opus::Decoder::new(RATE, layout).map_err(opus_err)?;
    decoder.set_gain(head.output_gain as i32).map_err(opus_err)?;
    out.start(RATE)?;

    let mut pcm = vec![0.0f32; MAX_FRAME * head.channels];
    let mut skip = head.pre_skip;
    // Mono samples of the current page, held until the page ends so the
    // last page can be trimmed to its granule position.
    let mut page: Vec<f32> = Vec::new();
    let mut emitted = 0u64;
    let mut ended = false;
    while let Some(packet) = reader.read_packet().map_err(ogg_error)? {
        if packet.stream_serial() != serial {
            if packet.data.starts_with(b"OpusHead") {
                return Err(DecodeError::Unsupported("more than one Opus stream (chained or multiplexed Ogg)".into()));
            }
            // Another logical stream (a video track, say) is not this audio.
            continue;
        }
        if ended {
            return Err(DecodeError::Corrupt("Ogg packets after the end of the Opus stream".into()));
        }
        if !tags_seen {
            if !packet.data.starts_with(b"OpusTags") {
                return Err(DecodeError::Corrupt("the second Ogg-Opus packet is not OpusTags".into()));
            }
            tags_seen = true;
            continue;
        }
        if packet.data.is_empty() {
            return Err(DecodeError::Corrupt("an empty Opus packet".into()));
        }
        let frames = decoder.decode_float(&packet.data, &mut pcm, false).map_err(opus_err)?;
        let decoded =
            pcm.get(..frames * head.channels).ok_or_else(|| DecodeError::Corrupt("Opus frame size".into()))?;
        let drop = skip.min(frames as u64) as usize;
        skip -= drop as u64;
        match head.channels {
            1 => page.extend_from_slice(&decoded[drop..]),
            _ => page.extend(decoded.chunks_exact(2).skip(drop).map(|lr| 0.5 * (lr[0] + lr[1]))),
        }
        if packet.last_in_page() {
            if packet.last_in_stream() {
                ended = true;
                let granule = packet.absgp_page();
                // u64::MAX is "no packet ends on this page"; otherwise the
                // granule counts samples from the start, pre-skip included.
                if granule != u64::MAX {
                    let playable = granule.saturating_sub(head.pre_skip);
                    if playable < emitted {
                        return Err(DecodeError::Corrupt(format!(
                            "the last page's granule position ({granule}) ends the audio before that page starts"
                        )));
                    }
                    page.truncate(usize::try_from(playable - emitted).unwrap_or(usize::MAX).min(page.len()));
                }
            }
            out.push_mono(&page)?;
            emitted += page.len() as u64;
            page.clear();
        }
    }
    if !tags_seen {
        return Err(DecodeError::Truncated("the Ogg-Opus stream ends after its OpusHead".into()));
    }
    if !ended {
        return Err(DecodeError::Truncated("the Ogg stream has no end-of-stream page".into()));
    }
    Ok(())
}
