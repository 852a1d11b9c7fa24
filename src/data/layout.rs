//! Where each dataset lives under the `datasets/` folder (`make data` links them there): the one
//! place these folder names are spelled in the code.

use std::path::{Path, PathBuf};

/// PF-WILLOW root (holding `PF-dataset/<class>/`).
pub fn pf_willow(datasets: &Path) -> PathBuf {
    datasets.join("pf-willow")
}

/// PF-PASCAL roots in order of preference: the full dataset, then the annotations-only copy that
/// has the pair lists.
pub fn pf_pascal_candidates(datasets: &Path) -> [PathBuf; 2] {
    [
        datasets.join("pf-pascal"),
        datasets.join("pf-pascal-annotations-only"),
    ]
}

/// Caltech-101 root (holding `101_ObjectCategories/` and, for evaluation, the authors' pair list).
pub fn caltech_101(datasets: &Path) -> PathBuf {
    datasets.join("caltech-101")
}

/// Caltech-101's class folders.
pub fn caltech_101_images(datasets: &Path) -> PathBuf {
    caltech_101(datasets).join("101_ObjectCategories")
}

/// TSS pair folders: the sample of the evaluation kit, else a full copy at `datasets/tss`.
pub fn tss(datasets: &Path) -> PathBuf {
    let sample = datasets.join("tss-sample/TSS_CVPR2016");
    if sample.is_dir() {
        sample
    } else {
        datasets.join("tss")
    }
}
