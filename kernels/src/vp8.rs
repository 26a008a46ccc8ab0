//! VP8 through the system's libvpx (`env-libvpx-sys`, bindings matched to
//! the installed version): the one thin unsafe layer around its encoder and
//! decoder. Browsers without H.264 (Firefox without Cisco's OpenH264
//! plug-in) send and expect VP8.
//!
//! Frames are packed I420 (Y, then U, then V, no padding), as the WebRTC
//! edge hands them around. The encoder runs libvpx's real-time mode on one
//! thread with constant bitrate and no frame lag, so every frame in gives
//! one frame out at once.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::raw::c_int;

use vpx_sys as ffi;

#[derive(Debug, thiserror::Error)]
pub enum Vp8Error {
    #[error("libvpx {call}: {message}")]
    Codec { call: &'static str, message: String },
    #[error("a VP8 frame must be even-sized between 16 and 16384 pixels a side, not {width}x{height}")]
    BadSize { width: usize, height: usize },
    #[error("a {width}x{height} I420 frame is {expected} bytes, not {got}")]
    BadFrame { width: usize, height: usize, expected: usize, got: usize },
    #[error("an empty or oversized VP8 frame ({0} bytes)")]
    BadInput(usize),
}

/// The text of a libvpx error, with the context's detail when it has one.
fn check(ctx: &mut ffi::vpx_codec_ctx_t, err: ffi::vpx_codec_err_t, call: &'static str) -> Result<(), Vp8Error> {
    if err == ffi::vpx_codec_err_t::VPX_CODEC_OK {
        return Ok(());
    }
    // SAFETY: libvpx returns a pointer to a static NUL-terminated string for
    // every error code, and the context's detail is either null or a
    // NUL-terminated string it owns until its next call.
    let message = unsafe {
        let mut message = CStr::from_ptr(ffi::vpx_codec_err_to_string(err)).to_string_lossy().into_owned();
        let detail = ffi::vpx_codec_error_detail(ctx);
        if !detail.is_null() {
            message = format!("{message} ({})", CStr::from_ptr(detail).to_string_lossy());
        }
        message
    };
    Err(Vp8Error::Codec { call, message })
}

fn check_size(width: usize, height: usize) -> Result<(), Vp8Error> {
    let side = 16..=16384;
    if side.contains(&width) && side.contains(&height) && width.is_multiple_of(2) && height.is_multiple_of(2) {
        Ok(())
    } else {
        Err(Vp8Error::BadSize { width, height })
    }
}

/// What the encoder is made for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderConfig {
    pub width: usize,
    pub height: usize,
    pub bitrate_bps: u32,
    pub fps: u32,
    /// libvpx's speed/quality trade in real-time mode (−16…16; larger
    /// magnitude is faster).
    pub cpu_used: i32,
}

/// One encoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Vp8Frame {
    pub data: Vec<u8>,
    /// A key frame: decoding can start here.
    pub keyframe: bool,
}

pub struct Encoder {
    /// Boxed: libvpx keeps the context where it was initialised.
    ctx: Box<ffi::vpx_codec_ctx_t>,
    cfg: ffi::vpx_codec_enc_cfg_t,
    config: EncoderConfig,
    pts: i64,
}

// SAFETY: the context is owned by this value alone and libvpx keeps no
// thread-local state; every call takes `&mut self`, so one thread at a time
// uses it.
unsafe impl Send for Encoder {}

impl Encoder {
    pub fn new(config: EncoderConfig) -> Result<Self, Vp8Error> {
        check_size(config.width, config.height)?;
        let fps = config.fps.max(1);
        // SAFETY: `vpx_codec_enc_config_default` fills the whole config
        // struct for the VP8 interface (checked by its return value), and
        // `vpx_codec_enc_init_ver` initialises the zeroed, boxed context it is
        // given, with the ABI version of the bindings.
        unsafe {
            let mut cfg = MaybeUninit::<ffi::vpx_codec_enc_cfg_t>::zeroed();
            let err = ffi::vpx_codec_enc_config_default(ffi::vpx_codec_vp8_cx(), cfg.as_mut_ptr(), 0);
            if err != ffi::vpx_codec_err_t::VPX_CODEC_OK {
                return Err(Vp8Error::Codec { call: "config_default", message: format!("{err:?}") });
            }
            let mut cfg = cfg.assume_init();
            cfg.g_w = config.width as u32;
            cfg.g_h = config.height as u32;
            cfg.g_timebase = ffi::vpx_rational { num: 1, den: fps as c_int };
            cfg.g_threads = 1;
            cfg.g_lag_in_frames = 0;
            cfg.g_error_resilient = 1;
            cfg.rc_end_usage = ffi::vpx_rc_mode::VPX_CBR;
            cfg.rc_target_bitrate = (config.bitrate_bps / 1000).max(1);
            cfg.rc_dropframe_thresh = 0;
            cfg.rc_min_quantizer = 2;
            cfg.rc_max_quantizer = 56;
            cfg.rc_undershoot_pct = 100;
            cfg.rc_overshoot_pct = 15;
            cfg.rc_buf_sz = 1000;
            cfg.rc_buf_initial_sz = 500;
            cfg.rc_buf_optimal_sz = 600;
            // Key frames when asked for (join, PLI/FIR) and at least every 10 s.
            cfg.kf_mode = ffi::vpx_kf_mode::VPX_KF_AUTO;
            cfg.kf_max_dist = 10 * fps;
            let mut ctx = Box::new(MaybeUninit::<ffi::vpx_codec_ctx_t>::zeroed().assume_init());
            let err = ffi::vpx_codec_enc_init_ver(
                &mut *ctx,
                ffi::vpx_codec_vp8_cx(),
                &cfg,
                0,
                ffi::VPX_ENCODER_ABI_VERSION as c_int,
            );
            check(&mut ctx, err, "encoder init")?;
            let mut encoder = Self { ctx, cfg, config, pts: 0 };
            let err = ffi::vpx_codec_control_(
                &mut *encoder.ctx,
                ffi::vp8e_enc_control_id::VP8E_SET_CPUUSED as c_int,
                config.cpu_used as c_int,
            );
            check(&mut encoder.ctx, err, "cpu-used")?;
            Ok(encoder)
        }
    }

    pub fn config(&self) -> EncoderConfig {
        self.config
    }

    /// Changes the target bitrate from the next frame on (no key frame).
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), Vp8Error> {
        self.cfg.rc_target_bitrate = (bps / 1000).max(1);
        // SAFETY: the context was initialised in `new` and `cfg` is the
        // config it was made with, changed only in its bitrate.
        let err = unsafe { ffi::vpx_codec_enc_config_set(&mut *self.ctx, &self.cfg) };
        check(&mut self.ctx, err, "set bitrate")?;
        self.config.bitrate_bps = bps;
        Ok(())
    }

    /// Encodes one packed I420 frame of the configured size; `keyframe`
    /// forces a key frame.
    pub fn encode(&mut self, i420: &[u8], keyframe: bool) -> Result<Vec<Vp8Frame>, Vp8Error> {
        let (width, height) = (self.config.width, self.config.height);
        let expected = width * height * 3 / 2;
        if i420.len() != expected {
            return Err(Vp8Error::BadFrame { width, height, expected, got: i420.len() });
        }
        let flags = if keyframe { ffi::VPX_EFLAG_FORCE_KF as ffi::vpx_enc_frame_flags_t } else { 0 };
        let mut frames = Vec::new();
        // SAFETY: `vpx_img_wrap` describes `i420` (checked above to hold
        // exactly width × height × 3/2 bytes, planes packed with stride
        // alignment 1, which is this layout for even sizes) without copying
        // it; libvpx only reads an input image, and `i420` outlives the
        // encode call. Each packet's buffer is valid until the next
        // `get_cx_data`/`encode` call and is copied out before that.
        unsafe {
            let mut image = MaybeUninit::<ffi::vpx_image_t>::zeroed();
            let wrapped = ffi::vpx_img_wrap(
                image.as_mut_ptr(),
                ffi::vpx_img_fmt::VPX_IMG_FMT_I420,
                width as u32,
                height as u32,
                1,
                i420.as_ptr().cast_mut(),
            );
            if wrapped.is_null() {
                return Err(Vp8Error::Codec { call: "img_wrap", message: "the frame was refused".into() });
            }
            let err = ffi::vpx_codec_encode(&mut *self.ctx, wrapped, self.pts, 1, flags, ffi::VPX_DL_REALTIME.into());
            check(&mut self.ctx, err, "encode")?;
            self.pts += 1;
            let mut iter: ffi::vpx_codec_iter_t = std::ptr::null();
            loop {
                let packet = ffi::vpx_codec_get_cx_data(&mut *self.ctx, &mut iter);
                if packet.is_null() {
                    break;
                }
                if (*packet).kind != ffi::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                    continue;
                }
                let frame = (*packet).data.frame;
                let data = std::slice::from_raw_parts(frame.buf.cast::<u8>(), frame.sz as usize).to_vec();
                frames.push(Vp8Frame { data, keyframe: frame.flags & ffi::VPX_FRAME_IS_KEY != 0 });
            }
        }
        Ok(frames)
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: the context was initialised in `new` and is destroyed once.
        unsafe {
            ffi::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

/// A decoded picture, packed I420 cropped to even sides.
#[derive(Debug, Clone, PartialEq)]
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub i420: Vec<u8>,
}

pub struct Decoder {
    ctx: Box<ffi::vpx_codec_ctx_t>,
}

// SAFETY: as for `Encoder`: owned context, used through `&mut self` only.
unsafe impl Send for Decoder {}

impl Decoder {
    pub fn new() -> Result<Self, Vp8Error> {
        let cfg = ffi::vpx_codec_dec_cfg { threads: 1, w: 0, h: 0 };
        // SAFETY: `vpx_codec_dec_init_ver` initialises the zeroed, boxed
        // context it is given, with the ABI version of the bindings.
        unsafe {
            let mut ctx = Box::new(MaybeUninit::<ffi::vpx_codec_ctx_t>::zeroed().assume_init());
            let err = ffi::vpx_codec_dec_init_ver(
                &mut *ctx,
                ffi::vpx_codec_vp8_dx(),
                &cfg,
                0,
                ffi::VPX_DECODER_ABI_VERSION as c_int,
            );
            check(&mut ctx, err, "decoder init")?;
            Ok(Self { ctx })
        }
    }

    /// Decodes one VP8 frame (as depacketized from RTP); `None` when it
    /// gives no picture (e.g. a frame not to be shown). Corrupt data is an
    /// error and the decoder stays usable (the next key frame recovers).
    pub fn decode(&mut self, frame: &[u8]) -> Result<Option<Picture>, Vp8Error> {
        if frame.is_empty() || frame.len() > u32::MAX as usize {
            return Err(Vp8Error::BadInput(frame.len()));
        }
        // SAFETY: `frame` is a valid slice for the call (libvpx copies what
        // it keeps). The image returned by `get_frame` belongs to the
        // context and stays valid until the next decode; its planes hold
        // `d_h` rows (chroma: `(d_h + 1) / 2`) of `stride` bytes each, of
        // which the first `d_w` (chroma: `(d_w + 1) / 2`) are read.
        unsafe {
            let err =
                ffi::vpx_codec_decode(&mut *self.ctx, frame.as_ptr(), frame.len() as u32, std::ptr::null_mut(), 0);
            check(&mut self.ctx, err, "decode")?;
            let mut iter: ffi::vpx_codec_iter_t = std::ptr::null();
            let image = ffi::vpx_codec_get_frame(&mut *self.ctx, &mut iter);
            if image.is_null() {
                return Ok(None);
            }
            let image = &*image;
            if image.fmt != ffi::vpx_img_fmt::VPX_IMG_FMT_I420 {
                return Err(Vp8Error::Codec { call: "decode", message: format!("pictures in {:?}", image.fmt) });
            }
            let (width, height) = (image.d_w as usize & !1, image.d_h as usize & !1);
            if width < 2 || height < 2 {
                return Ok(None);
            }
            let mut i420 = Vec::with_capacity(width * height * 3 / 2);
            for (plane, (w, h)) in
                [(width, height), (width / 2, height / 2), (width / 2, height / 2)].into_iter().enumerate()
            {
                let stride = image.stride[plane] as usize;
                for row in 0..h {
                    let start = image.planes[plane].add(row * stride);
                    i420.extend_from_slice(std::slice::from_raw_parts(start, w));
                }
            }
            Ok(Some(Picture { width, height, i420 }))
        }
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: the context was initialised in `new` and is destroyed once.
        unsafe {
            ffi::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A moving gradient with a bright square, packed I420.
    fn pattern(width: usize, height: usize, t: usize) -> Vec<u8> {
        let mut i420 = vec![128u8; width * height * 3 / 2];
        for y in 0..height {
            for x in 0..width {
                let inside = (x + 4 * t) % width < width / 4 && y < height / 3;
                i420[y * width + x] = if inside { 235 } else { (16 + (x + y + t) % 200) as u8 };
            }
        }
        i420
    }

    fn psnr(a: &[u8], b: &[u8]) -> f64 {
        let mse = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum::<f64>() / a.len() as f64;
        10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10()
    }

    #[test]
    fn round_trip_keeps_the_picture() {
        let (width, height) = (160, 96);
        let config = EncoderConfig { width, height, bitrate_bps: 800_000, fps: 25, cpu_used: -6 };
        let mut encoder = Encoder::new(config).unwrap();
        let mut decoder = Decoder::new().unwrap();
        let mut keys = Vec::new();
        for t in 0..20 {
            let input = pattern(width, height, t);
            let frames = encoder.encode(&input, t == 10).unwrap();
            assert_eq!(frames.len(), 1, "one frame out per frame in (no lag)");
            keys.push(frames[0].keyframe);
            let picture = decoder.decode(&frames[0].data).unwrap().expect("a picture per frame");
            assert_eq!((picture.width, picture.height), (width, height));
            let luma = width * height;
            let quality = psnr(&picture.i420[..luma], &input[..luma]);
            assert!(quality > 30.0, "frame {t}: luma PSNR {quality:.1} dB");
        }
        assert!(keys[0] && keys[10], "the first and the forced frame are key frames: {keys:?}");
        assert!(!keys[5], "frames in between are not: {keys:?}");
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(matches!(
            Encoder::new(EncoderConfig { width: 15, height: 16, bitrate_bps: 1, fps: 25, cpu_used: 8 }),
            Err(Vp8Error::BadSize { .. })
        ));
        let config = EncoderConfig { width: 32, height: 32, bitrate_bps: 100_000, fps: 25, cpu_used: 8 };
        let mut encoder = Encoder::new(config).unwrap();
        assert!(matches!(encoder.encode(&[0; 10], false), Err(Vp8Error::BadFrame { .. })));
        let mut decoder = Decoder::new().unwrap();
        assert!(matches!(decoder.decode(&[]), Err(Vp8Error::BadInput(0))));
        assert!(decoder.decode(&[0xff; 64]).is_err(), "garbage is an error");
        // The decoder still works after garbage.
        let frame = encoder.encode(&pattern(32, 32, 0), true).unwrap().remove(0);
        let picture = decoder.decode(&frame.data).unwrap().unwrap();
        assert_eq!((picture.width, picture.height, picture.i420.len()), (32, 32, 32 * 32 * 3 / 2));
        encoder.set_bitrate(50_000).unwrap();
        assert_eq!(encoder.config().bitrate_bps, 50_000);
        assert_eq!(encoder.encode(&pattern(32, 32, 1), false).unwrap().len(), 1);
    }
}
