//! The audio formats of `/v1/audio/speech`, encoded as the speech is
//! synthesised. Sans-IO: [`Encoder::push`] takes the next 48 kHz mono
//! samples, [`Encoder::take`] gives the bytes ready to send, and
//! [`Encoder::finish`] ends the stream.
//!
//! - `pcm`: OpenAI's raw format, 24 kHz 16-bit little-endian mono, no header.
//! - `wav`: the same samples behind a RIFF header whose sizes are 0xFFFFFFFF,
//!   as OpenAI streams it (the length is unknown when the header leaves).
//! - `opus`: Ogg-Opus (RFC 7845) at 48 kHz, one 20 ms frame per packet,
//!   `OpusHead` and `OpusTags` pages first, and a page ended after each push
//!   so a player can start on what has arrived. Granule positions count
//!   48 kHz samples including the encoder's pre-skip; the last page's
//!   granule trims the padding of the final frame.

use tete_engine::audio::{ResampleError, StreamResampler};
use tete_engine::tts::OUTPUT_RATE;

/// The rate of `pcm` and `wav` (OpenAI's).
pub const PCM_RATE: u32 = 24_000;
/// Samples in one Opus frame: 20 ms at 48 kHz.
pub const OPUS_FRAME: usize = 960;
/// The Opus bitrate: ample for one voice.
pub const OPUS_BITRATE: i32 = 32_000;
/// Largest Opus packet kept (RFC 6716 allows up to 1275 bytes per frame).
const MAX_PACKET: usize = 1_500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Wav,
    Pcm,
    OggOpus,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(transparent)]
    Resample(#[from] ResampleError),
    #[error("Opus encoder: {0}")]
    Opus(#[from] opus::Error),
    #[error("Ogg writer: {0}")]
    Ogg(#[from] std::io::Error),
}

/// One response's encoder.
pub struct Encoder {
    kind: Kind,
    /// Bytes ready to send.
    out: Vec<u8>,
}

enum Kind {
    Pcm16(Box<StreamResampler>),
    OggOpus(Box<OggOpus>),
}

impl Encoder {
    /// An encoder whose first bytes (any header) are ready at once.
    pub fn new(container: Container) -> Result<Self, EncodeError> {
        let mut out = Vec::new();
        let kind = match container {
            Container::Pcm => Kind::Pcm16(Box::new(StreamResampler::new(OUTPUT_RATE, PCM_RATE)?)),
            Container::Wav => {
                out.extend_from_slice(&streaming_wav_header(PCM_RATE));
                Kind::Pcm16(Box::new(StreamResampler::new(OUTPUT_RATE, PCM_RATE)?))
            }
            Container::OggOpus => Kind::OggOpus(Box::new(OggOpus::new(&mut out)?)),
        };
        Ok(Self { kind, out })
    }

    /// Encodes the next samples (48 kHz mono).
    pub fn push(&mut self, samples: &[f32]) -> Result<(), EncodeError> {
        match &mut self.kind {
            Kind::Pcm16(resampler) => {
                let resampled = resampler.push(samples)?;
                put_pcm16(&resampled, &mut self.out);
            }
            Kind::OggOpus(ogg) => ogg.push(samples, &mut self.out)?,
        }
        Ok(())
    }

    /// Ends the stream: the rest of the audio and any trailer become ready.
    pub fn finish(&mut self) -> Result<(), EncodeError> {
        match &mut self.kind {
            Kind::Pcm16(resampler) => {
                let rest = resampler.flush()?;
                put_pcm16(&rest, &mut self.out);
            }
            Kind::OggOpus(ogg) => ogg.finish(&mut self.out)?,
        }
        Ok(())
    }

    /// The bytes ready to send.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

fn put_pcm16(samples: &[f32], out: &mut Vec<u8>) {
    out.reserve(samples.len() * 2);
    for &s in samples {
        let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A 44-byte PCM WAV header (16-bit mono) for a stream of unknown length:
/// the RIFF and data sizes are 0xFFFFFFFF.
pub fn streaming_wav_header(rate: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        h[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(b"RIFF");
    put(&u32::MAX.to_le_bytes());
    put(b"WAVEfmt ");
    put(&16u32.to_le_bytes()); // fmt chunk size
    put(&1u16.to_le_bytes()); // PCM
    put(&1u16.to_le_bytes()); // mono
    put(&rate.to_le_bytes());
    put(&(rate * 2).to_le_bytes()); // bytes per second
    put(&2u16.to_le_bytes()); // block align
    put(&16u16.to_le_bytes()); // bits per sample
    put(b"data");
    put(&u32::MAX.to_le_bytes());
    h
}

/// Ogg-Opus, mono at 48 kHz.
struct OggOpus {
    encoder: opus::Encoder,
    writer: ogg::writing::PacketWriter<'static, Vec<u8>>,
    serial: u32,
    /// Samples the decoder drops from the start (the encoder's lookahead).
    pre_skip: u64,
    /// Input not yet a whole frame.
    pending: Vec<f32>,
    /// Input samples taken.
    samples: u64,
    /// Packets written.
    packets: u64,
    packet: Vec<u8>,
}

impl OggOpus {
    fn new(out: &mut Vec<u8>) -> Result<Self, EncodeError> {
        let mut encoder = opus::Encoder::new(OUTPUT_RATE, opus::Channels::Mono, opus::Application::Voip)?;
        encoder.set_bitrate(opus::Bitrate::Bits(OPUS_BITRATE))?;
        let pre_skip = encoder.get_lookahead()?.max(0) as u64;
        let mut this = Self {
            encoder,
            writer: ogg::writing::PacketWriter::new(Vec::new()),
            serial: rand::random(),
            pre_skip,
            pending: Vec::with_capacity(OPUS_FRAME),
            samples: 0,
            packets: 0,
            packet: vec![0; MAX_PACKET],
        };
        // RFC 7845 §5.1: the identification header, alone on the first page.
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(1); // channels
        head.extend_from_slice(&(pre_skip as u16).to_le_bytes());
        head.extend_from_slice(&OUTPUT_RATE.to_le_bytes()); // input rate
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // mapping family: mono/stereo
        this.writer.write_packet(head, this.serial, ogg::writing::PacketWriteEndInfo::EndPage, 0)?;
        // §5.2: the comment header, on its own page(s).
        let vendor = format!("tete {}", env!("CARGO_PKG_VERSION"));
        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor.as_bytes());
        tags.extend_from_slice(&0u32.to_le_bytes()); // no user comments
        this.writer.write_packet(tags, this.serial, ogg::writing::PacketWriteEndInfo::EndPage, 0)?;
        out.append(this.writer.inner_mut());
        Ok(this)
    }

    fn push(&mut self, samples: &[f32], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.samples += samples.len() as u64;
        self.pending.extend_from_slice(samples);
        let whole: Vec<f32> = self.pending.drain(..self.pending.len() / OPUS_FRAME * OPUS_FRAME).collect();
        let frames = whole.len() / OPUS_FRAME;
        for (i, frame) in whole.chunks_exact(OPUS_FRAME).enumerate() {
            let end = if i + 1 == frames {
                ogg::writing::PacketWriteEndInfo::EndPage
            } else {
                ogg::writing::PacketWriteEndInfo::NormalPacket
            };
            let granule = (self.packets + 1) * OPUS_FRAME as u64;
            self.write(frame, end, granule)?;
        }
        out.append(self.writer.inner_mut());
        Ok(())
    }

    /// Pads the last frame and adds frames until the decoder, having dropped
    /// the pre-skip, has every input sample; the final granule position says
    /// where the audio ends.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let needed = self.samples + self.pre_skip;
        let total_packets = needed.div_ceil(OPUS_FRAME as u64).max(self.packets + 1);
        let mut tail = std::mem::take(&mut self.pending);
        tail.resize(((total_packets - self.packets) as usize) * OPUS_FRAME, 0.0);
        let frames = tail.chunks(OPUS_FRAME).count();
        for (i, frame) in tail.chunks(OPUS_FRAME).enumerate() {
            let (end, granule) = if i + 1 == frames {
                (ogg::writing::PacketWriteEndInfo::EndStream, needed)
            } else {
                (ogg::writing::PacketWriteEndInfo::NormalPacket, (self.packets + 1) * OPUS_FRAME as u64)
            };
            self.write(frame, end, granule)?;
        }
        out.append(self.writer.inner_mut());
        Ok(())
    }

    fn write(&mut self, frame: &[f32], end: ogg::writing::PacketWriteEndInfo, granule: u64) -> Result<(), EncodeError> {
        let n = self.encoder.encode_float(frame, &mut self.packet)?;
        self.packets += 1;
        self.writer.write_packet(self.packet[..n].to_vec(), self.serial, end, granule)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize) -> Vec<f32> {
        (0..n).map(|i| 0.5 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / OUTPUT_RATE as f32).sin()).collect()
    }

    fn encode(container: Container, samples: &[f32], pieces: usize) -> Vec<u8> {
        let mut e = Encoder::new(container).unwrap();
        let mut bytes = e.take();
        for piece in samples.chunks(samples.len().div_ceil(pieces)) {
            e.push(piece).unwrap();
            bytes.extend(e.take());
        }
        e.finish().unwrap();
        bytes.extend(e.take());
        bytes
    }

    #[test]
    fn ogg_opus_decodes_to_the_samples_given() {
        for n in [1, 959, 960, 48_000, 48_017] {
            for pieces in [1, 3] {
                let bytes = encode(Container::OggOpus, &tone(n), pieces);
                let decoded = tete_engine::audio::decode(&bytes, std::time::Duration::from_secs(60)).unwrap();
                assert_eq!(decoded.sample_rate, OUTPUT_RATE);
                assert_eq!(decoded.samples.len(), n, "{n} samples in {pieces} pieces");
            }
        }
    }

    #[test]
    fn pcm_is_half_the_rate_in_16_bits() {
        let bytes = encode(Container::Pcm, &tone(48_000), 7);
        assert_eq!(bytes.len(), 24_000 * 2);
        let wav = encode(Container::Wav, &tone(48_000), 7);
        assert_eq!(&wav[44..], &bytes[..]);
        assert_eq!(&wav[4..8], &[0xff; 4]);
    }
}
