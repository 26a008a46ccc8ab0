//! The H.264 track of an MP4 file, laid out for decoding: its parameter
//! sets from `avcC`, and where each sample lies and when it is shown, from
//! the sample tables (`stsz`, `stsc`, `stco`/`co64`, `stts`, `ctts`).
//!
//! The boxes are parsed by `mp4parse`, the parser Firefox uses on the
//! open web (fuzzed, fallible allocations; the `mp4` crate's reader loops
//! forever on a damaged file with a box of size 0 inside `minf`). The
//! tables are walked here, and every count, offset and size is checked
//! against the file before it is used.

use std::ops::{ControlFlow, Range};

use mp4parse::{CodecType, SampleEntry, TimeOffsetVersion, TrackType, VideoCodecSpecific};
use openh264::decoder::{DecodedYUV, Decoder};

use super::ReplicaError;

/// The first H.264 video track of a file.
pub(super) struct Track {
    /// SPS and PPS from `avcC`, each behind an Annex-B start code.
    parameter_sets: Vec<u8>,
    /// Bytes in each NAL unit's length prefix (1, 2 or 4).
    length_size: usize,
    /// Where the samples lie in the file, in decode order.
    samples: Vec<Range<usize>>,
    /// The samples' presentation times in seconds from the first one,
    /// sorted: the decoder hands out pictures in this order.
    pub times: Vec<f64>,
    /// Length of the whole track in seconds.
    pub seconds: f64,
    /// Clockwise quarter turns from the coded picture to the displayed
    /// one (phones store portrait video as landscape frames and a turn).
    pub quarter_turns: u8,
}

impl Track {
    /// Reads the track's layout; samples starting after `max_seconds` are
    /// left out. The error says why the file cannot be read.
    pub fn read(file: &[u8], max_seconds: f64) -> Result<Self, String> {
        let context = mp4parse::read_mp4(&mut std::io::Cursor::new(file)).map_err(|e| match e {
            mp4parse::Error::MoovMissing => "it has no MP4 header (moov): not an MP4 file, or cut short".into(),
            mp4parse::Error::UnexpectedEOF => "the file ends inside its MP4 header (is it cut short?)".into(),
            e => format!("it is not a readable MP4 file ({e})"),
        })?;
        if context.mvex.is_some() {
            return Err("fragmented MP4 (streamed recordings) is not supported; save it as a regular MP4".to_string());
        }
        let videos: Vec<&mp4parse::Track> =
            context.tracks.iter().filter(|t| t.track_type == TrackType::Video).collect();
        let entry = |t: &mp4parse::Track| match t.stsd.as_ref()?.descriptions.first()? {
            SampleEntry::Video(v) => Some(v.codec_type),
            _ => None,
        };
        let Some(track) = videos.iter().copied().find(|t| entry(t) == Some(CodecType::H264)) else {
            return Err(match videos.first().map(|t| entry(t)) {
                None => "the file has no video track".to_string(),
                Some(Some(codec @ (CodecType::VP8 | CodecType::VP9 | CodecType::AV1 | CodecType::MP4V))) => {
                    format!("the video is {codec:?}; only H.264 can be read")
                }
                Some(Some(CodecType::EncryptedVideo)) => "the video is encrypted".to_string(),
                Some(_) => "the video is in a codec other than H.264, the only one that can be read".to_string(),
            });
        };
        let avcc = match track.stsd.as_ref().and_then(|s| s.descriptions.first()) {
            Some(SampleEntry::Video(v)) => match &v.codec_specific {
                VideoCodecSpecific::AVCConfig(avcc) => avcc.as_slice(),
                _ => return Err("the H.264 track has no avcC box".to_string()),
            },
            _ => return Err("the H.264 track has no sample description".to_string()),
        };
        let (length_size, parameter_sets) = parse_avcc(avcc)?;

        let tables = Tables::of(track)?;
        let count = tables.count(file.len() as u64)?;
        let samples = tables.locate(count, file.len() as u64)?;
        let timescale = track.timescale.map_or(0, |t| t.0);
        if timescale == 0 {
            return Err("the video track has no time scale".to_string());
        }
        let (shown, end) = tables.timing(count)?;
        let scale = timescale as f64;
        let first = shown.iter().copied().min().unwrap_or(0);
        let since_first = |t: i64| t.saturating_sub(first) as f64 / scale;
        let kept = shown.iter().take_while(|&&t| since_first(t) < max_seconds).count().max(1);
        let mut times: Vec<f64> = shown[..kept].iter().map(|&t| since_first(t)).collect();
        times.sort_by(f64::total_cmp);
        Ok(Self {
            parameter_sets,
            length_size,
            samples: samples[..kept].to_vec(),
            times,
            seconds: end as f64 / scale,
            quarter_turns: track.tkhd.as_ref().map_or(0, |t| quarter_turns(&t.matrix)),
        })
    }

    /// Decodes the samples in order and hands each picture, with its index
    /// in [`Track::times`], to `each` until it breaks.
    pub fn decode(
        &self,
        file: &[u8],
        mut each: impl FnMut(usize, &DecodedYUV<'_>) -> Result<ControlFlow<()>, ReplicaError>,
    ) -> Result<(), ReplicaError> {
        let mut decoder =
            Decoder::new().map_err(|e| ReplicaError::Video(format!("the H.264 decoder did not start: {e}")))?;
        let mut annex_b = Vec::new();
        let mut pictures = 0;
        let mut failure = None;
        for (i, range) in self.samples.iter().enumerate() {
            annex_b.clear();
            if i == 0 {
                annex_b.extend_from_slice(&self.parameter_sets);
            }
            self.to_annex_b(&file[range.clone()], &mut annex_b)
                .map_err(|e| ReplicaError::Video(format!("frame {i}: {e}")))?;
            match decoder.decode(&annex_b) {
                Ok(Some(picture)) if pictures < self.times.len() => {
                    pictures += 1;
                    if each(pictures - 1, &picture)?.is_break() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                // A damaged frame is skipped; the decoder conceals it in the next ones.
                Err(e) => failure = Some(e.to_string()),
            }
        }
        for picture in decoder.flush_remaining().unwrap_or_default() {
            if pictures >= self.times.len() {
                break;
            }
            pictures += 1;
            if each(pictures - 1, &picture)?.is_break() {
                return Ok(());
            }
        }
        if pictures == 0 {
            let reason = failure.unwrap_or_else(|| "the decoder gave no picture".into());
            return Err(ReplicaError::Video(format!("no frame of the H.264 track could be decoded ({reason})")));
        }
        Ok(())
    }

    /// Rewrites one sample's length-prefixed NAL units with start codes.
    fn to_annex_b(&self, mut sample: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let n = self.length_size;
        while !sample.is_empty() {
            let prefix = sample.get(..n).ok_or("a NAL length prefix is cut short")?;
            let len = prefix.iter().fold(0usize, |len, &b| len << 8 | usize::from(b));
            let nal = sample.get(n..n + len).ok_or("a NAL unit runs past the end of its frame")?;
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
            sample = &sample[n + len..];
        }
        Ok(())
    }
}

/// The rotation a track header's display matrix asks for, in clockwise
/// quarter turns; mirrored or skewed matrices are not followed.
fn quarter_turns(m: &mp4parse::Matrix) -> u8 {
    match (m.a.signum(), m.b.signum(), m.c.signum(), m.d.signum()) {
        (0, 1, -1, 0) => 1,
        (-1, 0, 0, -1) => 2,
        (0, -1, 1, 0) => 3,
        _ => 0,
    }
}

/// The AVCDecoderConfigurationRecord (ISO 14496-15 § 5.3.3.1): the NAL
/// length size, and the SPS and PPS as Annex-B.
fn parse_avcc(avcc: &[u8]) -> Result<(usize, Vec<u8>), String> {
    let broken = || "the avcC box is cut short".to_string();
    let length_size = match avcc.get(4).ok_or_else(broken)? & 0b11 {
        0 => 1,
        1 => 2,
        3 => 4,
        _ => return Err("avcC gives NAL lengths of 3 bytes".to_string()),
    };
    let mut sets = Vec::new();
    let mut at = 5;
    // SPS count in the low 5 bits, then PPS count in a whole byte.
    for mask in [0x1f, 0xff] {
        let n = avcc.get(at).ok_or_else(broken)? & mask;
        at += 1;
        for _ in 0..n {
            let len = usize::from(u16::from_be_bytes([
                *avcc.get(at).ok_or_else(broken)?,
                *avcc.get(at + 1).ok_or_else(broken)?,
            ]));
            let nal = avcc.get(at + 2..at + 2 + len).ok_or_else(broken)?;
            sets.extend_from_slice(&[0, 0, 0, 1]);
            sets.extend_from_slice(nal);
            at += 2 + len;
        }
    }
    Ok((length_size, sets))
}

/// A track's sample tables, each required.
struct Tables<'a> {
    stsz: &'a mp4parse::SampleSizeBox,
    stsc: &'a [mp4parse::SampleToChunk],
    chunks: &'a [u64],
    stts: &'a [mp4parse::Sample],
    ctts: &'a [mp4parse::TimeOffset],
}

impl<'a> Tables<'a> {
    fn of(track: &'a mp4parse::Track) -> Result<Self, String> {
        let missing = |name: &str| format!("the video track has no {name} table");
        Ok(Self {
            stsz: track.stsz.as_ref().ok_or_else(|| missing("sample size (stsz)"))?,
            stsc: &track.stsc.as_ref().ok_or_else(|| missing("sample-to-chunk (stsc)"))?.samples,
            chunks: &track.stco.as_ref().ok_or_else(|| missing("chunk offset (stco)"))?.offsets,
            stts: &track.stts.as_ref().ok_or_else(|| missing("timing (stts)"))?.samples,
            ctts: track.ctts.as_ref().map_or(&[], |c| &c.samples),
        })
    }

    /// How many samples the track has: one size each, or one size for all
    /// as many times as the timing table counts (and the file can hold).
    fn count(&self, file_len: u64) -> Result<usize, String> {
        let count = if self.stsz.sample_size == 0 {
            self.stsz.sample_sizes.len() as u64
        } else {
            let timed = self.stts.iter().map(|e| u64::from(e.sample_count)).sum::<u64>();
            if u64::from(self.stsz.sample_size).saturating_mul(timed) > file_len {
                return Err("the frames are said to be larger than the file (is it cut short?)".to_string());
            }
            timed
        };
        match count {
            0 => Err("the video track has no frames".to_string()),
            n => Ok(n as usize),
        }
    }

    fn size(&self, i: usize) -> u64 {
        match self.stsz.sample_size {
            0 => u64::from(self.stsz.sample_sizes[i]),
            fixed => u64::from(fixed),
        }
    }

    /// Where each of the `count` samples lies, from the sample sizes, the
    /// chunk offsets and the sample-to-chunk runs; all inside the file.
    fn locate(&self, count: usize, file_len: u64) -> Result<Vec<Range<usize>>, String> {
        let runs = self.stsc;
        let mut samples = Vec::with_capacity(count);
        'runs: for (r, run) in runs.iter().enumerate() {
            let end_chunk = runs.get(r + 1).map_or(self.chunks.len() as u64 + 1, |next| u64::from(next.first_chunk));
            if run.first_chunk == 0 || run.samples_per_chunk == 0 || end_chunk <= u64::from(run.first_chunk) {
                return Err("the sample-to-chunk table is inconsistent".to_string());
            }
            for chunk in u64::from(run.first_chunk)..end_chunk {
                let mut at = *self
                    .chunks
                    .get(chunk as usize - 1)
                    .ok_or_else(|| "the sample-to-chunk table names a chunk that does not exist".to_string())?;
                for _ in 0..run.samples_per_chunk {
                    if samples.len() == count {
                        break 'runs;
                    }
                    let end = at
                        .checked_add(self.size(samples.len()))
                        .filter(|&end| end <= file_len)
                        .ok_or_else(|| "a frame lies beyond the end of the file (is it cut short?)".to_string())?;
                    samples.push(at as usize..end as usize);
                    at = end;
                }
            }
        }
        if samples.len() < count {
            return Err("the sample tables place fewer frames than the track has".to_string());
        }
        Ok(samples)
    }

    /// Presentation times of the `count` samples in decode order (decode
    /// time plus composition offset) and the decode time at which the last
    /// one ends, in the track's time scale.
    fn timing(&self, count: usize) -> Result<(Vec<i64>, i64), String> {
        let mut shown = Vec::with_capacity(count);
        let mut t = 0i64;
        'stts: for entry in self.stts {
            for _ in 0..entry.sample_count {
                if shown.len() == count {
                    break 'stts;
                }
                shown.push(t);
                t = t.saturating_add(i64::from(entry.sample_delta));
            }
        }
        if shown.len() < count {
            return Err("the timing table covers fewer frames than the track has".to_string());
        }
        let offsets = self.ctts.iter().flat_map(|e| {
            let offset = match e.time_offset {
                TimeOffsetVersion::Version0(o) => i64::from(o),
                TimeOffsetVersion::Version1(o) => i64::from(o),
            };
            std::iter::repeat_n(offset, (e.sample_count as usize).min(count))
        });
        for (time, offset) in shown.iter_mut().zip(offsets) {
            *time = time.saturating_add(offset);
        }
        Ok((shown, t))
    }
}
