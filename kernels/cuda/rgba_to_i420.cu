// RGBA8 (R in the low byte) to I420, BT.601 limited range.
// One thread per 2x2 block: four luma bytes and one U and one V byte.
// Must match tete_kernels::cpu::rgba_to_i420 exactly (integer arithmetic).

__device__ __forceinline__ unsigned char luma(int r, int g, int b) {
    return (unsigned char)(((66 * r + 129 * g + 25 * b + 128) >> 8) + 16);
}

__device__ __forceinline__ unsigned char clamp_u8(int x) {
    return (unsigned char)(x < 0 ? 0 : (x > 255 ? 255 : x));
}

extern "C" __global__ void rgba_to_i420(const unsigned int* rgba, unsigned char* out, int width, int height) {
    const int cx = blockIdx.x * blockDim.x + threadIdx.x;
    const int cy = blockIdx.y * blockDim.y + threadIdx.y;
    const int cw = width / 2;
    const int ch = height / 2;
    if (cx >= cw || cy >= ch) {
        return;
    }
    int rs = 0, gs = 0, bs = 0;
    for (int dy = 0; dy < 2; ++dy) {
        for (int dx = 0; dx < 2; ++dx) {
            const int x = 2 * cx + dx;
            const int y = 2 * cy + dy;
            const unsigned int px = rgba[y * width + x];
            const int r = px & 0xff, g = (px >> 8) & 0xff, b = (px >> 16) & 0xff;
            out[y * width + x] = luma(r, g, b);
            rs += r;
            gs += g;
            bs += b;
        }
    }
    const int r = (rs + 2) >> 2, g = (gs + 2) >> 2, b = (bs + 2) >> 2;
    unsigned char* u_plane = out + width * height;
    unsigned char* v_plane = u_plane + cw * ch;
    u_plane[cy * cw + cx] = clamp_u8(((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128);
    v_plane[cy * cw + cx] = clamp_u8(((112 * r - 94 * g - 18 * b + 128) >> 8) + 128);
}
