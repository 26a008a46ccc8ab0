// RGBA8 (R in the low byte) to I420, BT.601 limited range, for the H.264
// encoder. Must match tete_kernels::cpu::rgba_to_i420 exactly: the same
// integer arithmetic, chroma from the rounded mean of each 2x2 block.
//
// Output is one array of u32 words holding the Y, U and V planes back to
// back; each invocation writes whole words (four bytes), so width must be a
// multiple of 8 and height even.

struct Params {
    width: u32,
    height: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> rgba: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

fn rgb(px: u32) -> vec3<i32> {
    return vec3<i32>(i32(px & 0xffu), i32((px >> 8u) & 0xffu), i32((px >> 16u) & 0xffu));
}

fn luma(c: vec3<i32>) -> u32 {
    return u32(((66 * c.x + 129 * c.y + 25 * c.z + 128) >> 8u) + 16);
}

fn chroma_u(c: vec3<i32>) -> u32 {
    return u32(clamp(((-38 * c.x - 74 * c.y + 112 * c.z + 128) >> 8u) + 128, 0, 255));
}

fn chroma_v(c: vec3<i32>) -> u32 {
    return u32(clamp(((112 * c.x - 94 * c.y - 18 * c.z + 128) >> 8u) + 128, 0, 255));
}

// One invocation per 4 luma bytes: x in 0..width/4, y in 0..height.
@compute @workgroup_size(8, 8, 1)
fn luma_main(@builtin(global_invocation_id) id: vec3<u32>) {
    let words_per_row = params.width / 4u;
    if (id.x >= words_per_row || id.y >= params.height) {
        return;
    }
    let base = id.y * params.width + id.x * 4u;
    var word = 0u;
    for (var i = 0u; i < 4u; i = i + 1u) {
        word = word | (luma(rgb(rgba[base + i])) << (8u * i));
    }
    out[id.y * words_per_row + id.x] = word;
}

fn block_mean(cx: u32, cy: u32) -> vec3<i32> {
    let top = (2u * cy) * params.width + 2u * cx;
    let bottom = top + params.width;
    let sum = rgb(rgba[top]) + rgb(rgba[top + 1u]) + rgb(rgba[bottom]) + rgb(rgba[bottom + 1u]);
    return (sum + vec3<i32>(2)) >> vec3<u32>(2u);
}

// One invocation per 4 chroma bytes of each plane: x in 0..width/8, y in 0..height/2.
@compute @workgroup_size(8, 8, 1)
fn chroma_main(@builtin(global_invocation_id) id: vec3<u32>) {
    let cw = params.width / 2u;
    let ch = params.height / 2u;
    let words_per_row = cw / 4u;
    if (id.x >= words_per_row || id.y >= ch) {
        return;
    }
    var u_word = 0u;
    var v_word = 0u;
    for (var i = 0u; i < 4u; i = i + 1u) {
        let c = block_mean(id.x * 4u + i, id.y);
        u_word = u_word | (chroma_u(c) << (8u * i));
        v_word = v_word | (chroma_v(c) << (8u * i));
    }
    let y_words = params.width * params.height / 4u;
    let plane_words = cw * ch / 4u;
    let idx = id.y * words_per_row + id.x;
    out[y_words + idx] = u_word;
    out[y_words + plane_words + idx] = v_word;
}
