//! The real default models, as `tete models fetch` leaves them in
//! `$TETE_HOME` (the README's test command fetches them first), load through
//! the engine's loading code: GGUF through candle's reader, converted
//! safetensors through candle, with the shapes the stages expect.

use candle_core::{DType, Device};
use tete_engine::models::{Manifest, ModelState, Store, convert::OUTPUT, default_home};

fn ready_store() -> (Manifest, Store) {
    let manifest = Manifest::embedded().unwrap();
    let store = Store::new(default_home());
    for model in manifest.defaults() {
        let state = store.state(model).unwrap();
        assert_eq!(
            state,
            ModelState::Verified,
            "{} is {state} in {}: run `tete models fetch` first",
            model.id,
            store.home().display()
        );
    }
    (manifest, store)
}

fn tensors(store: &Store, manifest: &Manifest, id: &str) -> std::collections::HashMap<String, candle_core::Tensor> {
    let path = store.model_dir(&manifest.model(id).unwrap().id).join(OUTPUT);
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn smollm2_gguf_carries_its_tokenizer_and_chat_template() {
    let (manifest, store) = ready_store();
    let model = manifest.model("smollm2-135m-instruct").unwrap();
    let path = store.file(model, &model.files[0].name);
    let mut file = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let arch = content.metadata["general.architecture"].to_string().unwrap().clone();
    assert_eq!(arch, "llama");
    assert!(content.metadata.contains_key("tokenizer.chat_template"));
    let tokens = content.metadata["tokenizer.ggml.tokens"].to_vec().unwrap().len();
    assert_eq!(tokens, 49152, "SmolLM2 vocabulary");
    let blocks = content.metadata["llama.block_count"].to_u32().unwrap();
    assert_eq!(blocks, 30);
}

#[test]
fn converted_weights_load_with_the_expected_shapes() {
    let (manifest, store) = ready_store();
    let whisper = tensors(&store, &manifest, "whisper-tiny.en");
    let emb = &whisper["decoder/embeddings/weight"];
    assert_eq!((emb.dims(), emb.dtype()), (&[51864, 384][..], DType::F16));
    assert_eq!(whisper["encoder/position_encodings/encodings"].dims(), &[1500, 384]);

    let expr = tensors(&store, &manifest, "face-expression");
    assert!(expr.values().all(|t| t.dtype() == DType::F32), "tfjs uint8 weights are dequantized");
    assert!(expr.keys().any(|k| k.starts_with("fc/")), "{:?}", expr.keys().collect::<Vec<_>>());

    let mesh = tensors(&store, &manifest, "facemesh");
    assert!(mesh.len() > 100, "FaceMesh has {} constant tensors", mesh.len());

    let turn = tensors(&store, &manifest, "smart-turn-v3.2");
    // Smart Turn's int8 weights arrive dequantized to f32: the 4 encoder
    // layers' 6 matrices, 2 convolutions, 2 classifier layers.
    let big_f32 = turn.values().filter(|t| t.dtype() == DType::F32 && t.elem_count() > 10_000).count();
    assert!(big_f32 >= 28, "{big_f32} large f32 tensors");
    assert!(
        turn.values().all(|t| t.elem_count() <= 10_000 || t.dtype() == DType::F32),
        "no large integer tensors remain"
    );

    let voice = tensors(&store, &manifest, "piper-en_US-joe-medium");
    assert!(
        voice.keys().any(|k| k.starts_with("enc_p.")) && voice.keys().any(|k| k.starts_with("dec.")),
        "VITS module names kept"
    );
}
