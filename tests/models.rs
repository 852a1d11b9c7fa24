//! Models and weights: parity with PyTorch through the real importers, key maps, records,
//! corrupted files, and the EfficientNet-Lite0 ImageNet import on real photos.
//!
//! Fixtures: `tests/fixtures/models.safetensors` from `tools/make_model_fixtures.py` (PyTorch
//! outputs; weights are a formula of each tensor's position, regenerated here and written in
//! torchvision / weakalign key layout). Parity tolerance: 1e-4 relative to the output's scale.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::Tensor;
use safetensors::tensor::{Dtype, TensorView};
use weakalign::backbone::{Backbone, BackboneKind, EfficientNetLite0Classifier, ResNet101, Vgg16};
use weakalign::geometry::{AffineTheta, GridFactors, Theta, TpsTheta, sample, sampling_grid};
use weakalign::model::ModelConfig;
use weakalign::regression::FeatureRegression;
use weakalign::weights;

use crate::common::{f32_device, tensor, values, wave};

struct Fixtures {
    tensors: HashMap<String, (Vec<usize>, Vec<f64>)>,
    metadata: HashMap<String, String>,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/models.safetensors"
        );
        let bytes = std::fs::read(path).expect("tests/fixtures/models.safetensors");
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid fixture");
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let data = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
                    .collect();
                (name, (view.shape().to_vec(), data))
            })
            .collect();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        Fixtures {
            tensors,
            metadata: meta.metadata().clone().unwrap_or_default(),
        }
    })
}

fn expected(name: &str) -> &'static (Vec<usize>, Vec<f64>) {
    fixtures()
        .tensors
        .get(name)
        .unwrap_or_else(|| panic!("fixture tensor {name}"))
}

/// `(key, shape)` of a fixture model's state dict.
fn keys(model: &str) -> Vec<(String, Vec<usize>)> {
    let json = &fixtures().metadata[&format!("{model}.keys")];
    serde_json::from_str(json).expect("key list")
}

/// The generator's `weight_values`.
fn weight_values(key: &str, shape: &[usize], index: usize) -> Vec<f32> {
    let n = shape.iter().product::<usize>().max(1);
    let w = wave(n, 0.37 * index as f64);
    let leaf = key.rsplit('.').next().unwrap();
    let f: Box<dyn Fn(f64) -> f64> = match leaf {
        "running_var" => Box::new(|v: f64| 1.0 + 0.5 * v.abs()),
        "running_mean" | "bias" => Box::new(|v| 0.1 * v),
        "weight" if shape.len() == 1 => Box::new(|v| 0.5 + 0.1 * v),
        _ => {
            let fan_in: usize = shape.iter().skip(1).product();
            let scale = 2.0 * (2.0 / fan_in as f64).sqrt();
            Box::new(move |v| scale * v)
        }
    };
    w.into_iter().map(|v| f(v) as f32).collect()
}

/// Writes a safetensors file holding the formula weights under `keys` (renamed by `rename`).
fn write_weights(
    dir: &Path,
    keys: &[(String, Vec<usize>)],
    rename: impl Fn(&str) -> String,
) -> PathBuf {
    let path = dir.join("weights.safetensors");
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = keys
        .iter()
        .enumerate()
        .map(|(i, (k, shape))| {
            let bytes = weight_values(k, shape, i)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            (rename(k), shape.clone(), bytes)
        })
        .collect();
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(k, shape, bytes)| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

fn input(shape: [usize; 4], seed: f64) -> Tensor<4> {
    let n = shape.iter().product();
    let v: Vec<f64> = wave(n, seed).into_iter().map(|v| v as f32 as f64).collect();
    tensor(&v, shape, f32_device())
}

/// `|got − want| ≤ 1e-4 · max|want|` elementwise.
fn assert_parity(what: &str, got: Vec<f64>, want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: size");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= 1e-4 * scale,
        "{what}: max |Δ| = {worst:e} > 1e-4 × {scale:e}"
    );
    println!("{what}: max |Δ| / scale = {:.2e}", worst / scale);
}

#[test]
fn vgg16_matches_torchvision() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_weights(dir.path(), &keys("vgg16"), |k| k.to_string());
    let mut backbone = Backbone::Vgg16(Vgg16::new(&f32_device().0));
    let report = weights::load_pretrained(&mut backbone, &path).unwrap();
    assert_eq!(report.applied, 20);
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    let out = backbone.forward(input([1, 3, 48, 48], 0.4));
    let (shape, want) = expected("vgg16.output");
    assert_eq!(out.dims().to_vec(), *shape);
    assert_parity("vgg16", values(out), want);
}

#[test]
fn resnet101_matches_torchvision() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_weights(dir.path(), &keys("resnet101"), |k| k.to_string());
    let mut backbone = Backbone::ResNet101(ResNet101::new(&f32_device().0));
    let report = weights::load_pretrained(&mut backbone, &path).unwrap();
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    let out = backbone.forward(input([1, 3, 48, 48], 0.6));
    let (shape, want) = expected("resnet101.output");
    assert_eq!(out.dims().to_vec(), *shape);
    assert_parity("resnet101", values(out), want);
}

fn head_parity<T: Theta + Send + core::fmt::Debug + 'static>(name: &str, prefix: &str, seed: f64) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_weights(dir.path(), &keys(name), |k| format!("{prefix}.{k}"));
    let mut head = FeatureRegression::<T>::new(15, &f32_device().0).unwrap();
    let report = weights::load_official_regression(&mut head, &path, prefix).unwrap();
    assert_eq!(report.applied, 14); // 2 convs × (w, b), 2 BNs × 4, linear (w, b)
    let theta = head.forward(input([2, 225, 15, 15], seed)).unwrap();
    assert_parity(
        name,
        values(theta.into_tensor()),
        &expected(&format!("{name}.output")).1,
    );
}

#[test]
fn regression_heads_match_pytorch() {
    head_parity::<AffineTheta>("regression_affine", "FeatureRegression", 1.1);
    head_parity::<TpsTheta>("regression_tps", "FeatureRegression2", 1.3);
}

fn vgg_two_stage_config() -> ModelConfig {
    ModelConfig {
        backbone: BackboneKind::Vgg16,
        ..ModelConfig::default()
    }
}

#[test]
fn two_stage_model_matches_pytorch_including_legacy_keys() {
    let dir = tempfile::tempdir().unwrap();
    for legacy in [false, true] {
        let rename = |k: &str| {
            if legacy {
                k.replace("FeatureExtraction.model.", "FeatureExtraction.vgg.")
            } else {
                k.to_string()
            }
        };
        let path = write_weights(dir.path(), &keys("two_stage_vgg16"), rename);
        let mut model = vgg_two_stage_config()
            .init_two_stage(&f32_device().0)
            .unwrap();
        let report = weights::load_official_two_stage(&mut model, &path).unwrap();
        assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
        let out = model
            .forward(input([1, 3, 240, 240], 0.2), input([1, 3, 240, 240], 0.9))
            .unwrap();
        assert_parity(
            "two-stage θ_aff",
            values(out.theta_aff.into_tensor()),
            &expected("two_stage_vgg16.theta_aff").1,
        );
        assert_parity(
            "two-stage θ_tps",
            values(out.theta_tps.into_tensor()),
            &expected("two_stage_vgg16.theta_tps").1,
        );
    }
}

#[test]
fn official_resnet_key_map_consumes_every_key_and_reports_strays() {
    let mut official = keys("two_stage_resnet101");
    let n_counters = official
        .iter()
        .filter(|(k, _)| k.ends_with("num_batches_tracked"))
        .count();
    official.push(("FeatureRegression.extra.weight".into(), vec![3]));
    official.push(("Unrelated.tensor".into(), vec![2]));
    // num_batches_tracked are scalars in torch; the writer handles shape [] as one value.
    let dir = tempfile::tempdir().unwrap();
    let path = write_weights(dir.path(), &official, |k| k.to_string());
    let mut model = ModelConfig::default()
        .init_two_stage(&f32_device().0)
        .unwrap();
    let report = weights::load_official_two_stage(&mut model, &path).unwrap();
    assert_eq!(
        report.unexpected,
        vec!["FeatureRegression.extra.weight", "Unrelated.tensor"]
    );
    // Every non-counter key of the official file was applied: 596 keys minus the counters, plus
    // the regressors.
    assert_eq!(report.applied, official.len() - 2 - n_counters);
}

#[test]
fn model_records_round_trip() {
    let (device, _) = f32_device();
    let model = vgg_two_stage_config().init_two_stage(&device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bpk");
    weights::save_record(&model, &path).unwrap();
    let mut other = vgg_two_stage_config().init_two_stage(&device).unwrap();
    weights::load_record(&mut other, &path).unwrap();
    let (s, t) = (input([1, 3, 240, 240], 0.3), input([1, 3, 240, 240], 0.7));
    let a = model.forward(s.clone(), t.clone()).unwrap();
    let b = other.forward(s, t).unwrap();
    assert_eq!(
        values(a.theta_tps.into_tensor()),
        values(b.theta_tps.into_tensor())
    );
}

#[test]
fn corrupted_and_mismatched_weights_are_clear_errors() {
    let (device, _) = f32_device();
    let dir = tempfile::tempdir().unwrap();
    let good = write_weights(dir.path(), &keys("vgg16"), |k| k.to_string());
    // Truncated file.
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let mut backbone = Backbone::Vgg16(Vgg16::new(&device));
    let e = weights::load_pretrained(&mut backbone, &truncated)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("truncated.safetensors") && e.contains("unreadable"),
        "{e}"
    );
    // A tensor with the wrong shape.
    let mut wrong = keys("vgg16");
    wrong[2].1 = vec![64, 32, 3, 3]; // features.2.weight should be [64, 64, 3, 3]
    let sub = dir.path().join("wrong");
    std::fs::create_dir(&sub).unwrap();
    let path = write_weights(&sub, &wrong, |k| k.to_string());
    let e = weights::load_pretrained(&mut backbone, &path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("conv1_2.weight") && e.contains("64, 64, 3, 3") && e.contains("64, 32, 3, 3"),
        "{e}"
    );
    // Missing tensors (a ResNet file for a VGG backbone).
    let sub = dir.path().join("missing");
    std::fs::create_dir(&sub).unwrap();
    let path = write_weights(&sub, &keys("resnet101")[..4], |k| k.to_string());
    let e = weights::load_pretrained(&mut backbone, &path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing from the file") && e.contains("conv1_1.weight"),
        "{e}"
    );
    // Not a file at all, and a corrupted record.
    let e =
        weights::load_pretrained(&mut backbone, &dir.path().join("nope.safetensors")).unwrap_err();
    assert!(e.to_string().contains("no such file"));
    let record = dir.path().join("bad.bpk");
    std::fs::write(&record, b"not a burnpack").unwrap();
    let mut model = vgg_two_stage_config().init_two_stage(&device).unwrap();
    let e = weights::load_record(&mut model, &record)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.bpk") && e.contains("unreadable record"),
        "{e}"
    );
}

/// The converted EfficientNet-Lite0 classifier (`make weights`), if present.
fn pretrained_efficientnet() -> Option<PathBuf> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/pretrained/efficientnet_lite0.bpk");
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run `make weights` before the tests: {} is missing",
        path.display()
    );
    eprintln!("skipping: {} missing (run `make weights`)", path.display());
    None
}

#[test]
fn efficientnet_lite0_matches_pytorch_with_real_weights() {
    let Some(path) = pretrained_efficientnet() else {
        return;
    };
    let (device, _) = f32_device();
    let mut net = EfficientNetLite0Classifier::new(&device);
    weights::load_record(&mut net, &path).unwrap();
    let logits = net.forward(input([1, 3, 224, 224], 0.8));
    assert_parity(
        "efficientnet logits",
        values(logits),
        &expected("efficientnet_lite0.logits").1,
    );
    // The backbone (blocks 0–10) from the same record.
    let mut backbone = BackboneKind::EfficientNetLite0.init(&device);
    let report = weights::load_pretrained(&mut backbone, &path).unwrap();
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    let out = backbone.forward(input([1, 3, 64, 64], 0.5));
    let (shape, want) = expected("efficientnet_lite0.features");
    assert_eq!(out.dims().to_vec(), *shape);
    assert_parity("efficientnet features", values(out), want);
}

/// `datasets/caltech-101` (linked by `make datasets`), if present.
fn caltech() -> Option<PathBuf> {
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/caltech-101/101_ObjectCategories");
    if root.is_dir() {
        return Some(root);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must link datasets/caltech-101 (make datasets)"
    );
    eprintln!("skipping: {} missing (run `make datasets`)", root.display());
    None
}

/// Caltech-101 classes with an obvious ImageNet counterpart, and the ImageNet indices that count
/// as correct.
const CALTECH_TO_IMAGENET: [(&str, &[usize]); 15] = [
    ("accordion", &[401]),
    ("airplanes", &[404, 895, 908]),
    ("laptop", &[620, 681, 527, 590]),
    ("llama", &[355]),
    ("nautilus", &[117]),
    ("pizza", &[963]),
    ("revolver", &[763]),
    ("schooner", &[780, 914, 484]),
    ("scorpion", &[71]),
    ("soccer_ball", &[805]),
    ("starfish", &[327]),
    ("stop_sign", &[919]),
    ("strawberry", &[949]),
    ("umbrella", &[879]),
    ("dalmatian", &[251]),
];

#[test]
fn efficientnet_lite0_recognizes_caltech_photos() {
    let (Some(weights_path), Some(root)) = (pretrained_efficientnet(), caltech()) else {
        return;
    };
    let (device, _) = f32_device();
    let mut net = EfficientNetLite0Classifier::new(&device);
    weights::load_record(&mut net, &weights_path).unwrap();
    let norm = BackboneKind::EfficientNetLite0.normalization();
    let (mut total, mut top1, mut top5) = (0, 0, 0);
    for (class, labels) in CALTECH_TO_IMAGENET {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files.iter().take(2) {
            let image =
                weakalign::data::image::load_network_input(file, 224, norm, &device).unwrap();
            let logits = values(net.forward(image));
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            total += 1;
            top1 += usize::from(labels.contains(&order[0]));
            let hit = order[..5].iter().any(|i| labels.contains(i));
            top5 += usize::from(hit);
            if !hit {
                println!("miss: {} → top-5 {:?}", file.display(), &order[..5]);
            }
        }
    }
    println!(
        "EfficientNet-Lite0 on {total} Caltech-101 photos: top-1 {top1}/{total}, top-5 {top5}/{total}"
    );
    assert!(total >= 20);
    assert!(top5 * 10 >= total * 8, "top-5 {top5}/{total} < 80 %");
}

#[test]
fn missing_imagenet_weights_say_how_to_get_them() {
    let dir = tempfile::tempdir().unwrap();
    let device = f32_device().0;
    for kind in [
        BackboneKind::Vgg16,
        BackboneKind::ResNet101,
        BackboneKind::EfficientNetLite0,
    ] {
        let mut backbone = kind.init(&device);
        let e = weights::load_imagenet(&mut backbone, dir.path())
            .unwrap_err()
            .to_string();
        let fix = if kind == BackboneKind::EfficientNetLite0 {
            "make weights"
        } else {
            "tools/convert_checkpoint.py"
        };
        assert!(
            e.contains(weights::pretrained_file(kind)) && e.contains(fix),
            "{e}"
        );
    }
}

#[test]
fn trainable_blocks_and_frozen_batch_norm() {
    use weakalign::backbone::{BatchNormMode, Trainable};
    let device = weakalign::device::training();
    let backbone = BackboneKind::ResNet101
        .init(&device)
        .configure(BatchNormMode::Frozen, Trainable::LastBlocks(2));
    let Backbone::ResNet101(net) = &backbone else {
        unreachable!()
    };
    assert!(!net.conv1.weight.is_require_grad());
    assert!(!net.layer3[20].conv2.weight.is_require_grad());
    assert!(net.layer3[21].conv2.weight.is_require_grad());
    assert!(net.layer3[22].bn3.gamma.is_require_grad());
    let before = values(net.layer3[22].bn3.running_mean.value());
    let x = tensor(
        &wave(2 * 3 * 32 * 32, 0.1),
        [2, 3, 32, 32],
        (device.clone(), burn::tensor::DType::F32),
    );
    let features = backbone.forward(x);
    let grads = features.sum().backward();
    assert!(net.layer3[22].conv3.weight.grad(&grads).is_some());
    assert!(net.layer3[0].conv3.weight.grad(&grads).is_none());
    // Frozen BatchNorm: running statistics are used and not updated by a training forward.
    assert_eq!(values(net.layer3[22].bn3.running_mean.value()), before);
    let all = BackboneKind::Vgg16
        .init(&device)
        .configure(BatchNormMode::Frozen, Trainable::All);
    let Backbone::Vgg16(vgg) = &all else {
        unreachable!()
    };
    assert!(
        vgg.conv1_1.weight.is_require_grad()
            && vgg.conv4_3.bias.as_ref().unwrap().is_require_grad()
    );
    let frozen = BackboneKind::Vgg16
        .init(&device)
        .configure(BatchNormMode::Frozen, Trainable::Frozen);
    let Backbone::Vgg16(vgg) = &frozen else {
        unreachable!()
    };
    assert!(!vgg.conv4_3.weight.is_require_grad());
}

#[test]
fn affine_refinement_composes_the_residual_predicted_on_the_warped_source() {
    let (device, _) = f32_device();
    let config = ModelConfig {
        backbone: BackboneKind::EfficientNetLite0,
        image_size: 176,
        ..ModelConfig::default()
    };
    // Built on the inference device, so batch normalization uses its running statistics (as
    // an evaluated checkpoint does): each pair's prediction is its own.
    let model = config.init_two_stage(&device).unwrap();
    let (s, t) = (input([2, 3, 176, 176], 0.3), input([2, 3, 176, 176], 0.7));
    let theta = |out: &weakalign::model::TwoStageOutput| {
        (
            values(out.theta_aff.tensor().clone()),
            values(out.theta_tps.tensor().clone()),
        )
    };
    // One pass is the paper's forward, bit for bit.
    let once = model.forward(s.clone(), t.clone()).unwrap();
    let refined_once = model.forward_refined(s.clone(), t.clone(), 1).unwrap();
    assert_eq!(theta(&once), theta(&refined_once));
    // Two passes: the residual is the affine head on the source warped by the first θ_aff.
    let twice = model.forward_refined(s.clone(), t.clone(), 2).unwrap();
    let grid = sampling_grid(&once.theta_aff, [176, 176], GridFactors::default()).unwrap();
    let warped = sample(s.clone(), grid).unwrap();
    let residual = model.forward_affine(warped, t.clone()).unwrap().theta;
    let want = once.theta_aff.compose(&residual).unwrap();
    assert_parity(
        "θ_aff after two passes",
        values(twice.theta_aff.tensor().clone()),
        &values(want.into_tensor()),
    );
    assert_ne!(
        theta(&twice).0,
        theta(&once).0,
        "the second pass moved θ_aff"
    );
    let e = model.forward_refined(s, t, 0).unwrap_err().to_string();
    assert!(e.contains("affine_passes"), "{e}");
}
