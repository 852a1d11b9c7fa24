//! Batches assembled on background threads, overlapped with compute, in a deterministic order
//! that can resume at any `(epoch, batch)`.
//!
//! The order of epoch `e` is a pure function of `(seed, e)` (a seeded shuffle, or the natural
//! order), every sample's randomness a pure function of `(seed, epoch, index)`, so starting at
//! `(e, b)` yields exactly the batches an uninterrupted run would have produced from there.
//! A producer thread prepares up to `prefetch` batches ahead, loading the samples of each batch in
//! parallel; samples travel as [`TensorData`] and become tensors on the consumer's device.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use burn::tensor::{Device, Tensor, TensorData};
use rand::seq::SliceRandom;

use super::ground_truth::{GroundTruth, SampleTruth};
use super::rng::{Stream, sample_rng};
use crate::error::Result;

/// One prepared pair.
#[derive(Clone, Debug)]
pub struct PairSample {
    /// Source image, `[1, 3, S, S]`, normalized.
    pub source: TensorData,
    /// Target image, `[1, 3, S, S]`, normalized.
    pub target: TensorData,
    /// The θ of a synthetic pair; `None` for a weak pair.
    pub truth: Option<SampleTruth>,
}

/// A dataset of pairs that can produce sample `index` of `epoch` on any thread.
pub trait PairSource: Send + Sync {
    /// Number of samples per epoch.
    fn len(&self) -> usize;
    /// Whether the source is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sample `index` of `epoch`, a pure function of its arguments (and the source's seed).
    fn sample(&self, index: usize, epoch: u64) -> Result<PairSample>;
}

/// A batch on the consumer's device.
#[derive(Clone, Debug)]
pub struct PairBatch {
    /// Epoch.
    pub epoch: u64,
    /// Batch index within the epoch.
    pub batch: usize,
    /// Dataset indices of the samples.
    pub indices: Vec<usize>,
    /// Sources, `[B, 3, S, S]`.
    pub source: Tensor<4>,
    /// Targets, `[B, 3, S, S]`.
    pub target: Tensor<4>,
    /// The known transforms (synthetic pairs) or none (weak pairs).
    pub truth: GroundTruth,
}

/// How an epoch is ordered and cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Order {
    /// Seed of the epoch shuffles.
    pub seed: u64,
    /// Shuffle every epoch (else natural order).
    pub shuffle: bool,
    /// Samples per batch.
    pub batch_size: usize,
    /// Keep a last, smaller batch.
    pub keep_last: bool,
}

impl Order {
    /// The sample indices of `epoch`, in order.
    pub fn epoch_indices(&self, len: usize, epoch: u64) -> Vec<usize> {
        let mut indices: Vec<usize> = (0..len).collect();
        if self.shuffle {
            indices.shuffle(&mut sample_rng(self.seed, Stream::Shuffle, epoch, 0));
        }
        indices
    }

    /// Number of batches in an epoch of `len` samples.
    pub fn batches_per_epoch(&self, len: usize) -> usize {
        if self.keep_last {
            len.div_ceil(self.batch_size)
        } else {
            len / self.batch_size
        }
    }
}

/// Loads one batch's samples in parallel (`threads` workers).
fn load_batch(
    source: &dyn PairSource,
    indices: &[usize],
    epoch: u64,
    threads: usize,
) -> Result<Vec<PairSample>> {
    let chunk = indices.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = indices
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|&i| source.sample(i, epoch))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(indices.len());
        for h in handles {
            out.extend(h.join().expect("loader worker panicked")?);
        }
        Ok(out)
    })
}

/// The batches of one epoch from batch `start` on, prepared in the background.
pub struct EpochBatches {
    receiver: Receiver<(usize, Vec<usize>, Result<Vec<PairSample>>)>,
    handle: Option<JoinHandle<()>>,
    epoch: u64,
    device: Device,
}

impl EpochBatches {
    /// Starts the producer thread for `epoch`, beginning at batch `start`.
    pub fn new(
        source: Arc<dyn PairSource>,
        order: Order,
        epoch: u64,
        start: usize,
        prefetch: usize,
        threads: usize,
        device: &Device,
    ) -> Self {
        let (sender, receiver) = sync_channel(prefetch.max(1));
        let handle = std::thread::spawn(move || {
            let indices = order.epoch_indices(source.len(), epoch);
            for b in start..order.batches_per_epoch(source.len()) {
                let end = ((b + 1) * order.batch_size).min(indices.len());
                let batch: Vec<usize> = indices[b * order.batch_size..end].to_vec();
                let samples = load_batch(source.as_ref(), &batch, epoch, threads);
                let failed = samples.is_err();
                if sender.send((b, batch, samples)).is_err() || failed {
                    return; // consumer gone, or an error it will report
                }
            }
        });
        Self {
            receiver,
            handle: Some(handle),
            epoch,
            device: device.clone(),
        }
    }
}

impl Iterator for EpochBatches {
    type Item = Result<PairBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let (batch, indices, samples) = self.receiver.recv().ok()?;
        Some(samples.and_then(|samples| {
            let cat = |f: fn(&PairSample) -> &TensorData| {
                let parts: Vec<Tensor<4>> = samples
                    .iter()
                    .map(|s| Tensor::from_data(f(s).clone(), &self.device))
                    .collect();
                Tensor::cat(parts, 0)
            };
            let truths: Vec<Option<SampleTruth>> = samples.iter().map(|s| s.truth).collect();
            Ok(PairBatch {
                epoch: self.epoch,
                batch,
                indices,
                source: cat(|s| &s.source),
                target: cat(|s| &s.target),
                truth: GroundTruth::collect(&truths)?,
            })
        }))
    }
}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        // Unblock the producer (its next send fails once the receiver is gone), then join it.
        let (_, dead) = sync_channel(0);
        self.receiver = dead;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
