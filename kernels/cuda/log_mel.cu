// Whisper log-mel features, the CUDA version of shaders/log_mel.wgsl; must
// match tete_kernels::mel::log_mel within the tolerance its test states.
// tables = [cos(400) | sin(400) | window(400) | filters(80 * 201)].

#define N_FFT 400
#define HOP 160
#define N_BINS 201
#define N_MELS 80

// One block of 256 threads per frame.
extern "C" __global__ void log_mel_frames(const float* audio, const float* tables, float* out, int n_frames) {
    __shared__ float frame[N_FFT];
    __shared__ float power[N_BINS];
    const int t = blockIdx.x;
    const int i = threadIdx.x;
    if (t >= n_frames) {
        return;
    }
    for (int n = i; n < N_FFT; n += blockDim.x) {
        frame[n] = audio[t * HOP + n] * tables[2 * N_FFT + n];
    }
    __syncthreads();
    if (i < N_BINS) {
        float re = 0.0f, im = 0.0f;
        for (int n = 0; n < N_FFT; ++n) {
            const int k = (i * n) % N_FFT;
            re += frame[n] * tables[k];
            im -= frame[n] * tables[N_FFT + k];
        }
        power[i] = re * re + im * im;
    }
    __syncthreads();
    if (i < N_MELS) {
        const float* w = tables + 3 * N_FFT + i * N_BINS;
        float e = 0.0f;
        for (int k = 0; k < N_BINS; ++k) {
            e += w[k] * power[k];
        }
        out[i * n_frames + t] = log10f(fmaxf(e, 1e-10f));
    }
}

// One block of 256 threads: the maximum into peak[0].
extern "C" __global__ void log_mel_max(const float* out, float* peak, int total) {
    __shared__ float partial[256];
    float m = -3.0e38f;
    for (int j = threadIdx.x; j < total; j += 256) {
        m = fmaxf(m, out[j]);
    }
    partial[threadIdx.x] = m;
    __syncthreads();
    for (int stride = 128; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) {
            partial[threadIdx.x] = fmaxf(partial[threadIdx.x], partial[threadIdx.x + stride]);
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        peak[0] = partial[0];
    }
}

extern "C" __global__ void log_mel_finish(float* out, const float* peak, int total) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j < total) {
        out[j] = (fmaxf(out[j], peak[0] - 8.0f) + 4.0f) / 4.0f;
    }
}
