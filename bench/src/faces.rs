//! The perception models and the picture the benches show them, from the
//! models `tete models fetch` keeps.

use std::sync::Arc;

use candle_core::Device;
use tete_engine::face::{BlazeFace, FaceMesh, RgbImage};
use tete_engine::models::{Manifest, Store, convert::OUTPUT, default_home};
use tete_engine::perception::{ExpressionNet, Perceiver};

fn model_dir(id: &str) -> std::path::PathBuf {
    let manifest = Manifest::embedded().expect("embedded manifest");
    Store::new(default_home()).model_dir(&manifest.model(id).expect("known model").id)
}

/// BlazeFace, FaceMesh and the expression net on the CPU.
pub fn perceiver() -> Perceiver {
    let (model, cpu) = (|id: &str| model_dir(id).join(OUTPUT), Device::Cpu);
    Perceiver::new(
        Arc::new(BlazeFace::load(&model("blazeface-short-range"), &cpu).expect("run `tete models fetch`")),
        Arc::new(FaceMesh::load(&model("facemesh"), &cpu).expect("FaceMesh weights")),
        Arc::new(ExpressionNet::load(&model("face-expression"), &cpu).expect("expression net weights")),
    )
}

/// The astronaut portrait, `size` pixels square: a user facing the camera.
pub fn portrait(size: u32) -> RgbImage {
    let path = model_dir("astronaut-portrait").join("astronaut.png");
    let image = image::open(path).expect("the astronaut portrait").to_rgb8();
    image::imageops::resize(&image, size, size, image::imageops::FilterType::Triangle)
}
