//! Data: readers and their errors, synthetic θ distributions, determinism, the embedded dataset,
//! the loader's resume, and the real benchmarks where `datasets/` has them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use weakalign::backbone::IMAGENET;
use weakalign::data::embedded::{CLASSES, EmbeddedConfig, EmbeddedDataset, EmbeddedPairs, Split};
use weakalign::data::loader::{EpochBatches, Order, PairSource};
use weakalign::data::synth::{SynthConfig, SynthModel, identity_theta, sample_theta, synth_pair};
use weakalign::data::{image, pf, tss, weak};
use weakalign::geometry::Tps;

use crate::common::{f32_device, values};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn small_embedded() -> EmbeddedConfig {
    EmbeddedConfig {
        seed: 7,
        size: 64,
        train: 3,
        validation: 2,
        test: 2,
    }
}

#[test]
fn image_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "broken.jpg", "definitely not a jpeg");
    let e = image::load_rgb(&bad).unwrap_err().to_string();
    assert!(e.contains("broken.jpg"), "{e}");
    let e = image::load_rgb(&dir.path().join("missing.png"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.png"), "{e}");
}

#[test]
fn grayscale_and_rgba_become_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let gray = dir.path().join("g.png");
    ::image::GrayImage::from_pixel(3, 2, ::image::Luma([77]))
        .save(&gray)
        .unwrap();
    let rgba = dir.path().join("a.png");
    ::image::RgbaImage::from_pixel(2, 2, ::image::Rgba([1, 2, 3, 4]))
        .save(&rgba)
        .unwrap();
    let g = image::load_rgb(&gray).unwrap();
    assert_eq!(
        (g.height, g.width, &g.pixels[..3]),
        (2, 3, &[77u8, 77, 77][..])
    );
    assert_eq!(&image::load_rgb(&rgba).unwrap().pixels[..3], &[1, 2, 3]);
}

#[test]
fn malformed_csv_rows_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "pairs.csv",
        "source_image,target_image,class,flip\na.jpg,b.jpg,1,0\nc.jpg,d.jpg,2,7\n",
    );
    let e = weak::read_pairs(&p).unwrap_err().to_string();
    assert!(e.contains("pairs.csv:3") && e.contains("flip"), "{e}");
    let p = write(dir.path(), "header.csv", "src,tgt,class,flip\na,b,1,0\n");
    let e = weak::read_pairs(&p).unwrap_err().to_string();
    assert!(
        e.contains("header.csv:1") && e.contains("expected columns"),
        "{e}"
    );
    let p = write(
        dir.path(),
        "short.csv",
        "source_image,target_image,class,flip\na.jpg,b.jpg\n",
    );
    let e = weak::read_pairs(&p).unwrap_err().to_string();
    assert!(
        e.contains("short.csv:2") && e.contains("missing column 4 (`flip`)"),
        "{e}"
    );
    let p = write(
        dir.path(),
        "pascal.csv",
        "source_image,target_image,class,XA,YA,XB,YB\na.jpg,b.jpg,3,1;2;3,4;5;6,7;8;9,1;2\n",
    );
    let e = pf::read_pascal_csv(&p).unwrap_err().to_string();
    assert!(
        e.contains("pascal.csv:2") && e.contains("differ in length"),
        "{e}"
    );
    let p = write(dir.path(), "willow.csv", "imageA,imageB\na,b,1,2\n");
    let e = pf::read_willow_csv(&p).unwrap_err().to_string();
    assert!(
        e.contains("willow.csv:2") && e.contains("expected 42"),
        "{e}"
    );
}

#[test]
fn pascal_padding_keypoints_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "pascal.csv",
        "source_image,target_image,class,XA,YA,XB,YB\na.jpg,b.jpg,3,1;-1;3,4;-1;6,7;8;9,1;2;3\n",
    );
    let pairs = pf::read_pascal_csv(&p).unwrap();
    assert_eq!(pairs[0].source_points, vec![(1.0, 4.0), (3.0, 6.0)]);
    assert_eq!(pairs[0].target_points, vec![(7.0, 1.0), (9.0, 3.0)]);
}

#[test]
fn synthetic_theta_statistics_match_the_reference_distributions() {
    let config = SynthConfig::default();
    let n = 20_000;
    let affine: Vec<Vec<f64>> = (0..n)
        .map(|i| sample_theta(SynthModel::Affine, &config, 1, 0, i))
        .collect();
    let mean = |k: usize| affine.iter().map(|t| t[k]).sum::<f64>() / n as f64;
    let var = |k: usize| affine.iter().map(|t| (t[k] - mean(k)).powi(2)).sum::<f64>() / n as f64;
    // tx, ty ~ U(−0.5, 0.5): mean 0, variance 1/12.
    for k in [2, 5] {
        assert!(
            mean(k).abs() < 0.01 && (var(k) - 1.0 / 12.0).abs() < 0.004,
            "t[{k}]"
        );
        assert!(affine.iter().all(|t| t[k].abs() <= 0.5));
    }
    // a11 = s·cos α with s ~ U(0.5, 1.5), α ~ U(−π/6, π/6): E = sin(π/6)/(π/6) = 0.95493.
    let e_cos = 0.5 / (std::f64::consts::PI / 6.0);
    assert!((mean(0) - e_cos).abs() < 0.01 && (mean(4) - e_cos).abs() < 0.01);
    assert!(
        affine
            .iter()
            .all(|t| t[0] >= 0.5 * (std::f64::consts::PI / 6.0).cos() - 1e-12 && t[0] <= 1.5)
    );
    // a12 = −s·sin α and a21 = s·sin α are symmetric around 0 with |·| ≤ 1.5·sin(π/6).
    for k in [1, 3] {
        assert!(mean(k).abs() < 0.01 && affine.iter().all(|t| t[k].abs() <= 0.75 + 1e-12));
    }
    // TPS: identity + U(−0.4, 0.4) per coordinate: variance 0.8²/12.
    let ident = identity_theta(SynthModel::Tps);
    let tps: Vec<Vec<f64>> = (0..n)
        .map(|i| sample_theta(SynthModel::Tps, &config, 1, 0, i))
        .collect();
    for k in 0..18 {
        let d: Vec<f64> = tps.iter().map(|t| t[k] - ident[k]).collect();
        let m = d.iter().sum::<f64>() / n as f64;
        let v = d.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n as f64;
        assert!(
            m.abs() < 0.01 && (v - 0.64 / 12.0).abs() < 0.003 && d.iter().all(|x| x.abs() <= 0.4)
        );
    }
}

#[test]
fn samples_are_a_pure_function_of_seed_epoch_index() {
    let config = SynthConfig::default();
    let a = sample_theta(SynthModel::Affine, &config, 3, 2, 17);
    assert_eq!(a, sample_theta(SynthModel::Affine, &config, 3, 2, 17));
    assert_ne!(a, sample_theta(SynthModel::Affine, &config, 3, 3, 17));
    assert_ne!(a, sample_theta(SynthModel::Affine, &config, 4, 2, 17));
}

#[test]
fn identity_synthetic_pair_has_equal_source_and_target() {
    let (device, dtype) = f32_device();
    let img = weakalign::data::embedded::render_instance(&small_embedded(), 0, 0)
        .image
        .to_tensor(&device, dtype);
    let config = SynthConfig {
        output_size: 32,
        ..SynthConfig::default()
    };
    let tps = Tps::new(0.0).unwrap();
    for model in [SynthModel::Affine, SynthModel::Tps] {
        let (s, t) = synth_pair(img.clone(), model, &identity_theta(model), &tps, &config).unwrap();
        assert_eq!(s.dims(), [1, 3, 32, 32]);
        let (s, t) = (values(s), values(t));
        let worst = s
            .iter()
            .zip(&t)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        // Raw 0–255 values; the TPS identity grid is exact to ~1e-7 in f32.
        assert!(worst < 1e-2, "{model:?}: {worst}");
    }
}

#[test]
fn embedded_dataset_is_identical_across_generations_and_splits_are_disjoint() {
    let config = small_embedded();
    let a = EmbeddedDataset::generate(config);
    let b = EmbeddedDataset::generate(config);
    assert_eq!(a.instances, b.instances);
    assert_eq!(a.instances.len(), CLASSES.len() * 7);
    let images = |split| -> std::collections::HashSet<usize> {
        a.pairs(split).iter().flat_map(|&(s, t)| [s, t]).collect()
    };
    let (tr, va, te) = (
        images(Split::Train),
        images(Split::Validation),
        images(Split::Test),
    );
    assert!(tr.is_disjoint(&va) && tr.is_disjoint(&te) && va.is_disjoint(&te));
    assert_eq!(a.test.len(), CLASSES.len() * 2);
    for inst in &a.instances {
        assert!(inst.keypoints.len() >= 6);
        // Instances differ from one another (per-instance variation).
        assert!(
            inst.keypoints
                .iter()
                .all(|&(x, y)| x.is_finite() && y.is_finite())
        );
    }
    assert_ne!(a.instances[0].image, a.instances[1].image);
    let other = EmbeddedDataset::generate(EmbeddedConfig { seed: 8, ..config });
    assert_ne!(a.instances[0].image, other.instances[0].image);
}

#[test]
fn embedded_keypoints_mark_the_rendered_object() {
    // Keypoints transform with the pose: at least 90 % of them must land inside the image.
    let d = EmbeddedDataset::generate(EmbeddedConfig {
        size: 96,
        ..small_embedded()
    });
    let inside = d
        .instances
        .iter()
        .flat_map(|i| i.keypoints.iter())
        .filter(|&&(x, y)| (1.0..=96.0).contains(&x) && (1.0..=96.0).contains(&y))
        .count();
    let total: usize = d.instances.iter().map(|i| i.keypoints.len()).sum();
    assert!(
        inside * 10 >= total * 9,
        "{inside}/{total} keypoints inside the image"
    );
}

#[test]
fn loader_is_deterministic_and_resumes_mid_epoch() {
    let dataset = Arc::new(EmbeddedDataset::generate(small_embedded()));
    let source: Arc<dyn PairSource> = Arc::new(EmbeddedPairs {
        dataset,
        split: Split::Train,
        size: 32,
        norm: IMAGENET,
    });
    let order = Order {
        seed: 5,
        shuffle: true,
        batch_size: 4,
        keep_last: false,
    };
    let device = f32_device().0;
    let run = |epoch, start| -> Vec<(Vec<usize>, Vec<f64>)> {
        EpochBatches::new(source.clone(), order, epoch, start, 2, 2, &device)
            .map(|b| {
                let b = b.unwrap();
                (b.indices, values(b.source))
            })
            .collect()
    };
    let full = run(1, 0);
    assert_eq!(full.len(), order.batches_per_epoch(source.len()));
    assert_eq!(run(1, 2), full[2..].to_vec());
    let other_epoch = run(2, 0);
    assert_ne!(
        other_epoch[0].0, full[0].0,
        "epochs are shuffled differently"
    );
    assert_eq!(run(1, 0), full);
}

#[test]
fn flo_files_round_trip_and_bad_ones_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let flow = tss::Flow {
        height: 2,
        width: 3,
        uv: (0..12).map(|i| i as f32 * 0.5 - 1.0).collect(),
    };
    let path = dir.path().join("f.flo");
    tss::write_flo(&path, &flow).unwrap();
    assert_eq!(tss::read_flo(&path).unwrap(), flow);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
    let e = tss::read_flo(&path).unwrap_err().to_string();
    assert!(e.contains("f.flo") && e.contains("bytes, expected"), "{e}");
    let junk = write(dir.path(), "junk.flo", "0123456789abcdef");
    assert!(
        tss::read_flo(&junk)
            .unwrap_err()
            .to_string()
            .contains("magic")
    );
}

fn dataset_dir(name: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("datasets")
        .join(name);
    if root.is_dir() {
        return Some(root);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must link datasets/{name} (make datasets)"
    );
    eprintln!("skipping: datasets/{name} missing (run `make datasets`)");
    None
}

#[test]
fn pf_willow_has_900_pairs_with_10_keypoints_and_round_trips_through_csv() {
    let Some(root) = dataset_dir("pf-willow") else {
        return;
    };
    let pairs = pf::willow_pairs_from_mat(&root).unwrap();
    assert_eq!(pairs.len(), 900);
    assert!(
        pairs
            .iter()
            .all(|p| p.source_points.len() == 10 && p.target_points.len() == 10)
    );
    assert_eq!(pairs.iter().filter(|p| p.class == "duck(S)").count(), 90);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("test_pairs_pf.csv");
    pf::write_willow_csv(&csv, &pairs).unwrap();
    assert_eq!(pf::read_willow_csv(&csv).unwrap(), pairs);
    // Keypoints lie inside their images.
    let p = &pairs[0];
    let (w, h) = ::image::image_dimensions(root.join(&p.source)).unwrap();
    assert!(
        p.source_points
            .iter()
            .all(|&(x, y)| x <= w as f64 && y <= h as f64)
    );
}

#[test]
fn tss_sample_pairs_flows_and_masks_read() {
    let Some(root) = dataset_dir("tss-sample") else {
        return;
    };
    let pairs = tss::tss_pairs(&root.join("TSS_CVPR2016")).unwrap();
    assert_eq!(pairs.len(), 6);
    assert_eq!(
        pairs.iter().map(|p| p.subset.as_str()).collect::<Vec<_>>(),
        ["FG3DCar", "FG3DCar", "JODS", "JODS", "PASCAL", "PASCAL"]
    );
    for p in &pairs {
        let flow = tss::read_flo(&p.flow(1)).unwrap();
        let mask = tss::read_mask(&p.mask(1)).unwrap();
        let (w, h) = ::image::image_dimensions(p.image(1)).unwrap();
        assert_eq!((flow.width, flow.height), (w as usize, h as usize));
        assert_eq!((mask.width, mask.height), (w as usize, h as usize));
        assert!(mask.fg.iter().any(|&f| f));
    }
}

#[test]
fn caltech_pair_lists_are_balanced_and_split_by_image() {
    let Some(root) = dataset_dir("caltech-101") else {
        return;
    };
    let lists = weak::build_pair_lists(
        &root.join("101_ObjectCategories"),
        10,
        0.2,
        1,
        &["BACKGROUND_Google"],
    )
    .unwrap();
    let classes: std::collections::BTreeSet<&str> =
        lists.train.iter().map(|p| p.class.as_str()).collect();
    assert_eq!(classes.len(), 101);
    assert_eq!(lists.train.len(), 101 * 10);
    let train: std::collections::HashSet<&PathBuf> = lists
        .train
        .iter()
        .flat_map(|p| [&p.source, &p.target])
        .collect();
    assert!(
        lists
            .validation
            .iter()
            .all(|p| !train.contains(&p.source) && !train.contains(&p.target))
    );
    assert_eq!(
        lists,
        weak::build_pair_lists(
            &root.join("101_ObjectCategories"),
            10,
            0.2,
            1,
            &["BACKGROUND_Google"]
        )
        .unwrap()
    );
}

/// Reads a kit `scores.csv`: rows `(name, T1..T50)`.
fn kit_scores(path: &Path) -> Vec<(String, Vec<f64>)> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].to_string(),
                f[5..55].iter().map(|v| v.parse().unwrap()).collect(),
            )
        })
        .collect()
}

/// The kit's own scores of its sample results (6 pairs, 3 subsets, every row and threshold,
/// including the Average and w/o-flip rows), to 1e-6.
#[test]
fn tss_metric_reproduces_the_kit_scores() {
    use weakalign::eval::flow::pair_scores;
    let Some(root) = dataset_dir("tss-sample") else {
        return;
    };
    let mut worst = 0.0f64;
    for subset in ["FG3DCar", "JODS", "PASCAL"] {
        let want = kit_scores(
            &root
                .join("reference_results")
                .join(subset)
                .join("scores.csv"),
        );
        let mut rows: Vec<Vec<f64>> = Vec::new();
        let mut flips = Vec::new();
        let mut pairs: Vec<PathBuf> =
            std::fs::read_dir(root.join("reference_results").join(subset))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.is_dir())
                .collect();
        pairs.sort();
        for dir in pairs {
            let gt = root
                .join("TSS_CVPR2016")
                .join(subset)
                .join(dir.file_name().unwrap());
            let read = |d: &Path, k: u8| tss::read_flo(&d.join(format!("flow{k}.flo"))).unwrap();
            let (a, b) = pair_scores(&read(&dir, 1), &read(&dir, 2), &read(&gt, 1), &read(&gt, 2));
            let flip = tss::read_flip(&gt.join("flip_gt.txt")).unwrap();
            rows.push(a.to_vec());
            rows.push(b.to_vec());
            flips.extend([flip, flip]);
        }
        let mean = |sel: &dyn Fn(usize) -> bool| -> Vec<f64> {
            let chosen: Vec<&Vec<f64>> = rows
                .iter()
                .enumerate()
                .filter(|(i, _)| sel(*i))
                .map(|(_, r)| r)
                .collect();
            (0..50)
                .map(|t| chosen.iter().map(|r| r[t]).sum::<f64>() / chosen.len() as f64)
                .collect()
        };
        let n = flips.len();
        let (average, noflip) = (mean(&|_| true), mean(&|i| i < n && !flips[i]));
        rows.push(average);
        rows.push(noflip);
        assert_eq!(rows.len(), want.len(), "{subset}: row count");
        for (got, (name, want)) in rows.iter().zip(&want) {
            for t in 0..50 {
                let d = (got[t] - want[t]).abs();
                worst = worst.max(d);
                assert!(
                    d <= 5e-6,
                    "{subset} {name} T{}: {} vs kit {}",
                    t + 1,
                    got[t],
                    want[t]
                );
            }
        }
    }
    println!("TSS parity: max |ours − kit| over 3 subsets × 6 rows × 50 thresholds = {worst:.2e}");
}

#[test]
fn a_pf_willow_class_with_a_missing_image_is_reported() {
    let Some(willow) = dataset_dir("pf-willow") else {
        return;
    };
    // A copy of PF-WILLOW whose car(G) lacks one image and its keypoints.
    let dir = tempfile::tempdir().unwrap();
    let classes = dir.path().join("pf-willow/PF-dataset");
    std::fs::create_dir_all(&classes).unwrap();
    for class in pf::WILLOW_CLASSES {
        let from = willow.join("PF-dataset").join(class);
        if class != "car(G)" {
            std::os::unix::fs::symlink(&from, classes.join(class)).unwrap();
            continue;
        }
        let to = classes.join(class);
        std::fs::create_dir(&to).unwrap();
        let mut files: Vec<_> = std::fs::read_dir(&from)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        let dropped = files[0].file_stem().unwrap().to_owned();
        for f in files.iter().filter(|f| f.file_stem().unwrap() != dropped) {
            std::fs::copy(f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weakalign"))
        .args(["data", "willow-csv", "--root"])
        .arg(dir.path().join("pf-willow"))
        .arg("--out")
        .arg(dir.path().join("pairs.csv"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("car(G)") && text.contains("9 images where PF-WILLOW has 10"),
        "{text}"
    );
    assert!(
        text.contains("72 pairs of this class instead of 90"),
        "{text}"
    );
}
