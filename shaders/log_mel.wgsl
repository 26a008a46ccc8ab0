// Whisper log-mel features on the GPU. Must match
// tete_kernels::mel::log_mel (f64 on the CPU; here f32, compared with a
// stated tolerance). The CPU side normalises and reflect-pads the audio
// and supplies the tables (cos/sin of 2*pi*i/400, the periodic Hann
// window, the 80x201 Slaney mel filters), so this file does the heavy
// part only: windowed DFT power, mel projection, log10, and the
// (max - 8) clamp with (x + 4) / 4.

struct Params {
    n_frames: u32,
    n_padded: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> audio: array<f32>;
// [cos(400) | sin(400) | window(400) | filters(80 * 201)]
@group(0) @binding(2) var<storage, read> tables: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> peak: array<f32>;

const N_FFT: u32 = 400u;
const HOP: u32 = 160u;
const N_BINS: u32 = 201u;
const N_MELS: u32 = 80u;
const LOG10_2: f32 = 0.30102999566;

var<workgroup> power: array<f32, 201>;
var<workgroup> frame: array<f32, 400>;
var<workgroup> partial: array<f32, 256>;

// One workgroup per frame: 201 power bins, then 80 mel energies.
@compute @workgroup_size(256, 1, 1)
fn mel_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = wg.x + wg.y * 65535u;
    let i = lid.x;
    let in_range = t < params.n_frames;
    if (in_range) {
        for (var n = i; n < N_FFT; n = n + 256u) {
            frame[n] = audio[t * HOP + n] * tables[2u * N_FFT + n];
        }
    }
    workgroupBarrier();
    if (in_range && i < N_BINS) {
        var re = 0.0;
        var im = 0.0;
        for (var n = 0u; n < N_FFT; n = n + 1u) {
            let k = (i * n) % N_FFT;
            re = re + frame[n] * tables[k];
            im = im - frame[n] * tables[N_FFT + k];
        }
        power[i] = re * re + im * im;
    }
    workgroupBarrier();
    if (in_range && i < N_MELS) {
        let base = 3u * N_FFT + i * N_BINS;
        var e = 0.0;
        for (var k = 0u; k < N_BINS; k = k + 1u) {
            e = e + tables[base + k] * power[k];
        }
        out[i * params.n_frames + t] = log2(max(e, 1e-10)) * LOG10_2;
    }
}

// One workgroup: the maximum of all values into peak[0].
@compute @workgroup_size(256, 1, 1)
fn max_main(@builtin(local_invocation_id) lid: vec3<u32>) {
    let total = N_MELS * params.n_frames;
    var m = -3.0e38;
    for (var j = lid.x; j < total; j = j + 256u) {
        m = max(m, out[j]);
    }
    partial[lid.x] = m;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride = stride / 2u) {
        if (lid.x < stride) {
            partial[lid.x] = max(partial[lid.x], partial[lid.x + stride]);
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        peak[0] = partial[0];
    }
}

// Every value: clamp to (max - 8), then (x + 4) / 4.
@compute @workgroup_size(256, 1, 1)
fn finish_main(@builtin(global_invocation_id) id: vec3<u32>) {
    let j = id.x + id.y * 65535u * 256u;
    if (j < N_MELS * params.n_frames) {
        out[j] = (max(out[j], peak[0] - 8.0) + 4.0) / 4.0;
    }
}
