// The talking-head warp: one RGBA8 frame from a frame record and a portrait.
// Must match tete_kernels::warp::render (the CPU reference, which documents
// the steps and the record layout) up to float rounding. One thread per
// output pixel.

#define HEADER 40
#define MAX_POINTS 128
#define POINT_WORDS 5
#define H_WIDTH 0
#define H_HEIGHT 1
#define H_POINTS 2
#define H_MOUTH 3
#define H_MOUTH_UPPER 4
#define H_HEAD 8
#define H_ELLIPSE 16
#define H_ROI 21
#define H_MOUTH_BOX 25
#define H_FEATHER 29
#define H_MOUTH_GAIN 30
#define H_TEETH_HEIGHT 31
#define H_TEETH_X 32
#define H_TONGUE 34
#define H_REST_MOUTH 38
#define MAX_MOUTH 32
#define MOUTH_AT (HEADER + MAX_POINTS * POINT_WORDS)
#define REST_MOUTH_AT (MOUTH_AT + MAX_MOUTH * 2)
#define LID_POINTS 9
#define EYE_WORDS (5 + 4 * LID_POINTS)
#define EYES_AT (REST_MOUTH_AT + MAX_MOUTH * 2)

__constant__ float CAVITY_EDGE[3] = {92.0f, 38.0f, 40.0f};
__constant__ float CAVITY_DEEP[3] = {28.0f, 8.0f, 10.0f};
__constant__ float TEETH[3] = {226.0f, 220.0f, 206.0f};
__constant__ float TONGUE[3] = {158.0f, 72.0f, 76.0f};

__device__ __forceinline__ float fr(const unsigned int* r, int i) { return __uint_as_float(r[i]); }

__device__ __forceinline__ bool inside(const unsigned int* r, int at, float x, float y) {
    return x >= fr(r, at) && y >= fr(r, at + 1) && x <= fr(r, at + 2) && y <= fr(r, at + 3);
}

__device__ __forceinline__ float smooth(float a, float b, float x) {
    float t = fminf(fmaxf((x - a) / (b - a), 0.0f), 1.0f);
    return t * t * (3.0f - 2.0f * t);
}

__device__ float segment_distance(float ax, float ay, float bx, float by, float x, float y) {
    float vx = bx - ax, vy = by - ay, wx = x - ax, wy = y - ay;
    float len2 = vx * vx + vy * vy;
    float t = len2 > 0.0f ? fminf(fmaxf((wx * vx + wy * vy) / len2, 0.0f), 1.0f) : 0.0f;
    float dx = wx - t * vx, dy = wy - t * vy;
    return sqrtf(dx * dx + dy * dy);
}

// y of a lid polyline (increasing x) at x; false beyond its corners.
__device__ bool lid_y(const unsigned int* r, int at, float x, float* y) {
    for (int i = 0; i < LID_POINTS - 1; ++i) {
        float x0 = fr(r, at + 2 * i), x1 = fr(r, at + 2 * i + 2);
        if (x >= x0 && x <= x1 && x1 > x0) {
            float y0 = fr(r, at + 2 * i + 1), y1 = fr(r, at + 2 * i + 3);
            *y = y0 + (y1 - y0) * (x - x0) / (x1 - x0);
            return true;
        }
    }
    return false;
}

__device__ float lids(const unsigned int* r, float x, float y) {
    for (int eye = 0; eye < 2; ++eye) {
        int at = EYES_AT + eye * EYE_WORDS;
        float closure = fr(r, at);
        float upper, lower;
        if (closure <= 0.0f || !inside(r, at + 1, x, y) || !lid_y(r, at + 5, x, &upper) ||
            !lid_y(r, at + 5 + 2 * LID_POINTS, x, &lower)) {
            continue;
        }
        float h = lower - upper;
        float top = fr(r, at + 2);
        if (h <= 0.0f || y > lower || upper <= top) {
            continue;
        }
        float drop = closure * h;
        if (y <= upper) {
            return drop * (y - top) / (upper - top);
        }
        float cover = fminf(fmaxf(upper + drop - y + 0.5f, 0.0f), 1.0f);
        return drop * cover;
    }
    return 0.0f;
}

// Signed distance to the polygon of n vertices at word `at` (negative
// inside); *upper_edge gets the distance to its first upper - 1 edges.
__device__ float polygon(const unsigned int* r, int at, unsigned int n, unsigned int upper, float x, float y,
                         float* upper_edge) {
    float edge = 3.4028235e38f;
    *upper_edge = 3.4028235e38f;
    unsigned int crossings = 0;
    for (unsigned int i = 0; i < n; ++i) {
        unsigned int j = i + 1 == n ? 0 : i + 1;
        float ax = fr(r, at + 2 * i), ay = fr(r, at + 2 * i + 1);
        float bx = fr(r, at + 2 * j), by = fr(r, at + 2 * j + 1);
        float d = segment_distance(ax, ay, bx, by, x, y);
        edge = fminf(edge, d);
        if (j < upper && j > 0) {
            *upper_edge = fminf(*upper_edge, d);
        }
        if ((ay > y) != (by > y) && x < ax + (y - ay) * (bx - ax) / (by - ay)) {
            crossings += 1;
        }
    }
    return crossings % 2 == 1 ? -edge : edge;
}

__device__ void bilinear(const unsigned int* r, const unsigned int* portrait, float sx, float sy, float* rgb) {
    const int w = (int)r[H_WIDTH], h = (int)r[H_HEIGHT];
    sx = fminf(fmaxf(sx, 0.0f), (float)(w - 1));
    sy = fminf(fmaxf(sy, 0.0f), (float)(h - 1));
    int x0 = (int)floorf(sx), y0 = (int)floorf(sy);
    int x1 = min(x0 + 1, w - 1), y1 = min(y0 + 1, h - 1);
    float fx = sx - (float)x0, fy = sy - (float)y0;
    unsigned int pa = portrait[y0 * w + x0], pb = portrait[y0 * w + x1];
    unsigned int pc = portrait[y1 * w + x0], pd = portrait[y1 * w + x1];
    for (int ch = 0; ch < 3; ++ch) {
        int sh = 8 * ch;
        float top = (float)((pa >> sh) & 0xff) * (1.0f - fx) + (float)((pb >> sh) & 0xff) * fx;
        float bottom = (float)((pc >> sh) & 0xff) * (1.0f - fx) + (float)((pd >> sh) & 0xff) * fx;
        rgb[ch] = top * (1.0f - fy) + bottom * fy;
    }
}

extern "C" __global__ void face_warp(const unsigned int* r, const unsigned int* portrait, unsigned int* out) {
    const int w = (int)r[H_WIDTH], h = (int)r[H_HEIGHT];
    const int ix = blockIdx.x * blockDim.x + threadIdx.x;
    const int iy = blockIdx.y * blockDim.y + threadIdx.y;
    if (ix >= w || iy >= h) {
        return;
    }
    float x = (float)ix, y = (float)iy;

    // Head.
    float ex = (x - fr(r, H_ELLIPSE)) / fr(r, H_ELLIPSE + 2);
    float ey = (y - fr(r, H_ELLIPSE + 1)) / fr(r, H_ELLIPSE + 3);
    float hw = 1.0f - smooth(1.0f, fr(r, H_ELLIPSE + 4), sqrtf(ex * ex + ey * ey));
    float qx = x, qy = y;
    if (hw > 0.0f) {
        float px = x - fr(r, H_HEAD), py = y - fr(r, H_HEAD + 1);
        float dx = fr(r, H_HEAD + 2) * px + fr(r, H_HEAD + 3) * py + fr(r, H_HEAD + 6);
        float dy = fr(r, H_HEAD + 4) * px + fr(r, H_HEAD + 5) * py + fr(r, H_HEAD + 7);
        qx = x - hw * dx;
        qy = y - hw * dy;
    }

    // Features.
    float sx = qx, sy = qy;
    if (inside(r, H_ROI, qx, qy)) {
        float sw = 0.0f, ax = 0.0f, ay = 0.0f;
        for (unsigned int i = 0; i < r[H_POINTS]; ++i) {
            int at = HEADER + i * POINT_WORDS;
            float radius = fr(r, at + 4);
            float ox = qx - fr(r, at), oy = qy - fr(r, at + 1);
            float r2 = ox * ox + oy * oy;
            if (r2 < radius * radius) {
                float q = sqrtf(r2) / radius;
                float a = 1.0f - q;
                float phi = a * a * a * a * (4.0f * q + 1.0f);
                sw += phi;
                ax += phi * fr(r, at + 2);
                ay += phi * fr(r, at + 3);
            }
        }
        float n = fmaxf(sw, 1.0f);
        sx = qx - ax / n;
        sy = qy - ay / n;
    }

    sy -= lids(r, sx, sy);
    float rgb[3];
    bilinear(r, portrait, sx, sy, rgb);

    // Inner mouth.
    unsigned int n = r[H_MOUTH];
    float gain = fr(r, H_MOUTH_GAIN);
    if (n >= 3 && gain > 0.0f && inside(r, H_MOUTH_BOX, qx, qy)) {
        float feather = fr(r, H_FEATHER);
        float upper_edge, unused;
        float sgn = polygon(r, MOUTH_AT, n, r[H_MOUTH_UPPER], qx, qy, &upper_edge);
        float alpha = fminf(fmaxf(0.5f - sgn / feather, 0.0f), 1.0f) * gain;
        if (alpha > 0.0f) {
            float depth = smooth(0.0f, 6.0f, -sgn);
            float c[3];
            for (int ch = 0; ch < 3; ++ch) {
                c[ch] = CAVITY_EDGE[ch] + (CAVITY_DEEP[ch] - CAVITY_EDGE[ch]) * depth;
            }
            float tx = (qx - fr(r, H_TONGUE)) / fr(r, H_TONGUE + 2);
            float ty = (qy - fr(r, H_TONGUE + 1)) / fr(r, H_TONGUE + 3);
            float tongue = tx * tx + ty * ty;
            if (tongue < 1.0f) {
                float rim = fminf((1.0f - tongue) * 4.0f, 1.0f);
                for (int ch = 0; ch < 3; ++ch) c[ch] += (TONGUE[ch] * (0.75f + 0.25f * (1.0f - tongue)) - c[ch]) * rim;
            }
            float teeth_h = fr(r, H_TEETH_HEIGHT);
            float teeth_x = fabsf(qx - fr(r, H_TEETH_X)) / fr(r, H_TEETH_X + 1);
            if (upper_edge < teeth_h && teeth_x < 1.0f) {
                float shade = 1.0f - 0.25f * (upper_edge / teeth_h) - 0.3f * teeth_x * teeth_x;
                for (int ch = 0; ch < 3; ++ch) c[ch] = TEETH[ch] * shade;
            }
            unsigned int rest = r[H_REST_MOUTH];
            if (rest >= 3) {
                float own = fminf(fmaxf(0.5f - polygon(r, REST_MOUTH_AT, rest, 0, qx, qy, &unused) / feather, 0.0f), 1.0f);
                if (own > 0.0f) {
                    float teeth[3];
                    bilinear(r, portrait, qx, qy, teeth);
                    for (int ch = 0; ch < 3; ++ch) c[ch] += (teeth[ch] - c[ch]) * own;
                }
            }
            for (int ch = 0; ch < 3; ++ch) rgb[ch] += (c[ch] - rgb[ch]) * alpha;
        }
    }
    unsigned int px = 0xff000000u;
    for (int ch = 0; ch < 3; ++ch) {
        px |= (unsigned int)fminf(fmaxf(floorf(rgb[ch] + 0.5f), 0.0f), 255.0f) << (8 * ch);
    }
    out[iy * w + ix] = px;
}
