//! A run's data, built once: the embedded dataset, the validation and test keypoint sets, and
//! each stage's stream of batches (synthetic pairs for the strong stages, image pairs for the
//! weak one) from any global step on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::Device;

use super::config::TrainData;
use super::resolve::Resolved;
use super::stage::{Stage, StagePlan};
use crate::backbone::Normalization;
use crate::data::embedded::{EmbeddedConfig, EmbeddedDataset, EmbeddedPairs, Split};
use crate::data::image::{RgbImage, load_rgb};
use crate::data::layout;
use crate::data::loader::{EpochBatches, Order, PairBatch, PairSource};
use crate::data::synth::{SynthConfig, SynthModel, SynthPairs, image_paths_in};
use crate::data::weak::{WeakPairs, build_pair_lists, with_mirrored};
use crate::error::{Error, Result};
use crate::eval::keypoints::KeypointSet;
use crate::geometry::Tps;

/// Weak training pairs per Caltech-101 class, and the share of each class's images held out.
const CALTECH_PAIRS_PER_CLASS: usize = 40;
const CALTECH_HELD_OUT: f64 = 0.2;

/// A dataset the configuration asks for under `key` cannot be read: `e`, with the key.
fn missing_dataset(file: &Path, datasets: &Path, key: &str, name: &str, e: Error) -> Error {
    Error::Config {
        file: file.to_path_buf(),
        line: None,
        key: Some(key.into()),
        msg: format!(
            "{name:?}: {e} (the datasets live under {}; `make datasets` links ../shared/data \
             there)",
            datasets.display()
        ),
    }
}

/// The data of one run.
pub struct Sources {
    r: Resolved,
    datasets: PathBuf,
    embedded: Arc<EmbeddedDataset>,
    /// Validation pairs (at most `eval.max_validation_pairs`).
    pub validation: KeypointSet,
    /// Test pairs (at most `eval.max_test_pairs`; all by default).
    pub test: KeypointSet,
    /// The training images of the synthetic pairs, decoded once for both strong stages and
    /// released when the weak stage starts.
    train_images: std::sync::Mutex<Option<Arc<Vec<RgbImage>>>>,
}

impl Sources {
    /// Generates the embedded dataset and loads the keypoint sets (`datasets` is the folder the
    /// real datasets are linked under).
    ///
    /// Called before a run writes anything: a missing or damaged dataset is an error naming the
    /// configuration key that asked for it (`data.train`, `data.validation`, `data.test`).
    pub fn build(r: &Resolved, datasets: &Path) -> Result<Self> {
        let exp = &r.experiment;
        let keyed = |key: &'static str, name: String| {
            move |e: Error| missing_dataset(&r.file, datasets, key, &name, e)
        };
        let embedded = Arc::new(EmbeddedDataset::generate(EmbeddedConfig::default()));
        let validation = exp
            .data
            .validation
            .keypoint_set(datasets, Some(&embedded), Split::Validation)
            .map_err(keyed("data.validation", exp.data.validation.name()))?
            .subset(exp.eval.max_validation_pairs);
        let test = exp
            .data
            .test
            .keypoint_set(datasets, Some(&embedded), Split::Test)
            .map_err(keyed("data.test", exp.data.test.name()))?
            .subset(exp.eval.max_test_pairs);
        if exp.data.train == TrainData::Caltech101 {
            let images = image_paths_in(&layout::caltech_101_images(datasets))
                .map_err(keyed("data.train", "caltech-101".into()))?;
            if images.is_empty() {
                let e = Error::data(layout::caltech_101_images(datasets), None, "no images");
                return Err(keyed("data.train", "caltech-101".into())(e));
            }
        }
        Ok(Self {
            r: r.clone(),
            datasets: datasets.to_path_buf(),
            embedded,
            validation,
            test,
            train_images: std::sync::Mutex::new(None),
        })
    }

    fn norm(&self) -> Normalization {
        self.r.normalization()
    }

    /// The training images of the synthetic pairs (decoded on first use).
    fn train_images(&self) -> Result<Arc<Vec<RgbImage>>> {
        let mut cache = self
            .train_images
            .lock()
            .expect("no panic while holding the cache");
        if let Some(images) = cache.as_ref() {
            return Ok(images.clone());
        }
        let images = Arc::new(self.decode_train_images()?);
        *cache = Some(images.clone());
        Ok(images)
    }

    fn decode_train_images(&self) -> Result<Vec<RgbImage>> {
        match self.r.experiment.data.train {
            TrainData::Caltech101 => image_paths_in(&layout::caltech_101_images(&self.datasets))?
                .iter()
                .map(|p| load_rgb(p))
                .collect(),
            TrainData::Embedded => Ok(self
                .embedded
                .instances
                .iter()
                .filter(|i| i.index < self.embedded.config.train)
                .map(|i| i.image.clone())
                .collect()),
        }
    }

    /// The pairs `stage` trains on.
    pub fn pair_source(&self, stage: Stage) -> Result<Arc<dyn PairSource>> {
        if stage == Stage::Weak {
            // The synthetic stages are over: release their decoded images.
            if let Ok(mut cache) = self.train_images.lock() {
                cache.take();
            }
        }
        let exp = &self.r.experiment;
        let size = exp.model.image_size;
        let synth = |model: SynthModel| -> Result<Arc<dyn PairSource>> {
            let config = SynthConfig {
                random_alpha: exp.strong.random_alpha,
                random_s: exp.strong.random_s,
                random_t: exp.strong.random_t,
                tps_range: exp.strong.tps_range,
                output_size: size,
                ..SynthConfig::default()
            };
            Ok(Arc::new(SynthPairs {
                images: self.train_images()?,
                model,
                config,
                tps: Tps::new(0.0)?,
                seed: exp.seed,
                norm: self.norm(),
            }))
        };
        match (stage, exp.data.train) {
            (Stage::StrongAffine, _) => synth(SynthModel::Affine),
            (Stage::StrongTps, _) => synth(SynthModel::Tps),
            (Stage::Weak, TrainData::Caltech101) => {
                let root = layout::caltech_101_images(&self.datasets);
                let lists = build_pair_lists(
                    &root,
                    CALTECH_PAIRS_PER_CLASS,
                    CALTECH_HELD_OUT,
                    exp.seed,
                    &["BACKGROUND_Google"],
                )?;
                Ok(Arc::new(WeakPairs {
                    root,
                    pairs: with_mirrored(lists.train, exp.weak.flip),
                    augment: exp.weak.random_crop,
                    size,
                    norm: self.norm(),
                    seed: exp.seed,
                }))
            }
            (Stage::Weak, TrainData::Embedded) => Ok(Arc::new(EmbeddedPairs {
                dataset: self.embedded.clone(),
                split: Split::Train,
                size,
                norm: self.norm(),
            })),
        }
    }

    /// The batches of `plan`'s stage from global step `step` on, on `device`.
    pub fn batches(&self, plan: &StagePlan, step: u64, device: &Device) -> Result<BatchStream> {
        let source = self.pair_source(plan.stage)?;
        let order = Order {
            seed: self.r.experiment.seed,
            shuffle: true,
            batch_size: plan.batch_size,
            keep_last: false,
        };
        let per_epoch = order.batches_per_epoch(source.len()) as u64;
        if per_epoch == 0 {
            return Err(Error::Argument {
                op: plan.stage.name(),
                arg: "batch_size",
                reason: format!(
                    "{} training pairs make no batch of {}",
                    source.len(),
                    plan.batch_size
                ),
            });
        }
        let local = step - plan.begin;
        let data = &self.r.experiment.data;
        let mut stream = BatchStream {
            source,
            order,
            epoch: local / per_epoch,
            prefetch: data.prefetch,
            workers: match data.workers {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
            device: device.clone(),
            current: None,
            yielded: false,
        };
        stream.start((local % per_epoch) as usize);
        Ok(stream)
    }
}

/// A stage's batches, epoch after epoch: every batch is a pure function of the seed and its
/// position, so a stream started at any step yields what an uninterrupted run saw from there.
pub struct BatchStream {
    source: Arc<dyn PairSource>,
    order: Order,
    epoch: u64,
    prefetch: usize,
    workers: usize,
    device: Device,
    current: Option<EpochBatches>,
    /// Whether the current epoch's loader has produced a batch.
    yielded: bool,
}

impl BatchStream {
    /// Starts the current epoch's background loader at batch `start`.
    fn start(&mut self, start: usize) {
        self.yielded = false;
        self.current = Some(EpochBatches::new(
            self.source.clone(),
            self.order,
            self.epoch,
            start,
            self.prefetch,
            self.workers,
            &self.device,
        ));
    }

    /// The next batch, moving on to the next epoch when one ends.
    pub fn next_batch(&mut self) -> Result<PairBatch> {
        loop {
            if let Some(batch) = self.current.as_mut().and_then(Iterator::next) {
                self.yielded = true;
                return batch;
            }
            if !self.yielded {
                return Err(Error::Argument {
                    op: "loader",
                    arg: "epoch",
                    reason: format!("epoch {} ended without a batch", self.epoch),
                });
            }
            self.epoch += 1;
            self.start(0);
        }
    }
}
