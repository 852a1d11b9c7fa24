//! Image loading and the reference's preprocessing.
//!
//! Decode (JPEG/PNG; grayscale and RGBA become RGB), resize to the network size by bilinear
//! sampling through an identity grid (align_corners = true, **no antialiasing**, aspect ratio not
//! kept) on the raw 0–255 values, then normalize per channel for the backbone.
//!
//! ## Reference
//! weakalign: `data/pf_dataset.py` `get_image`, `image/normalization.py` (weakalign-reference §1).

use std::path::Path;

use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::backbone::Normalization;
use crate::error::{Error, Result};
use crate::geometry::{identity_grid, sample};

/// A decoded RGB image, `height × width × 3` bytes, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Interleaved RGB bytes.
    pub pixels: Vec<u8>,
}

/// Smallest side accepted: pixel coordinates are normalized by `size − 1` (align_corners).
pub const MIN_SIDE: usize = 2;

/// Decodes an image file; grayscale, gray+alpha and RGBA become RGB. A JPEG cut short (no end
/// marker after its last scan: the decoder would fill the rest with gray and succeed) and an
/// image smaller than [`MIN_SIDE`] pixels on a side are errors naming the file.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let fail = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        return Err(fail("empty file (0 bytes)".into()));
    }
    if is_truncated_jpeg(&bytes) {
        return Err(fail(
            "truncated JPEG (no end-of-image marker after the last scan): the file was cut short"
                .into(),
        ));
    }
    let decoded = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| fail(e.to_string()))?
        .decode()
        .map_err(|e| fail(e.to_string()))?;
    let rgb = decoded.to_rgb8();
    let (height, width) = (rgb.height() as usize, rgb.width() as usize);
    if height < MIN_SIDE || width < MIN_SIDE {
        return Err(fail(format!(
            "{width}×{height} pixels: at least {MIN_SIDE}×{MIN_SIDE} are needed"
        )));
    }
    Ok(RgbImage {
        height,
        width,
        pixels: rgb.into_raw(),
    })
}

/// Whether `bytes` are a JPEG whose last scan (`FF DA`) is not followed by an end-of-image
/// marker (`FF D9`). Inside entropy-coded data `FF` is always followed by `00` or a restart
/// marker, so neither marker can occur there by chance.
fn is_truncated_jpeg(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return false;
    }
    let marker = |m: u8| move |w: &[u8]| w == [0xFF, m];
    match bytes.windows(2).rposition(marker(0xDA)) {
        Some(sos) => !bytes[sos..].windows(2).any(marker(0xD9)),
        None => true, // no scan at all: nothing but headers
    }
}

impl RgbImage {
    /// The image as a backbone input: resized to `size × size`, normalized.
    ///
    /// # Shapes
    /// - output: `[1, 3, size, size]`
    pub fn network_input(&self, size: usize, norm: Normalization, device: &Device) -> Tensor<4> {
        normalize(
            resize(self.to_tensor(device, DType::F32), [size, size]),
            norm,
        )
    }

    /// The raw image as a tensor of 0–255 values.
    ///
    /// # Shapes
    /// - output: `[1, 3, height, width]`
    pub fn to_tensor(&self, device: &Device, dtype: DType) -> Tensor<4> {
        let (h, w) = (self.height, self.width);
        let mut planar = vec![0.0f32; 3 * h * w];
        for (i, px) in self.pixels.chunks_exact(3).enumerate() {
            for c in 0..3 {
                planar[c * h * w + i] = px[c] as f32;
            }
        }
        Tensor::from_data(TensorData::new(planar, [1, 3, h, w]), (device, dtype))
    }
}

/// Resizes raw images by bilinear sampling on an identity grid (align_corners = true, no
/// antialiasing), as the reference does before normalizing.
///
/// # Shapes
/// - `images`: `[batch, channels, h, w]`
/// - output: `[batch, channels, size[0], size[1]]`
pub fn resize(images: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [batch, _, _, _] = images.dims();
    let grid = identity_grid(batch, size, &images.device(), images.dtype());
    sample(images, grid).expect("an identity grid has the images' batch size")
}

/// `(x/255 − mean) / std` per channel.
///
/// # Shapes
/// - `images`: `[batch, 3, h, w]`, values 0–255
/// - output: `[batch, 3, h, w]`
pub fn normalize(images: Tensor<4>, norm: Normalization) -> Tensor<4> {
    let (device, dtype) = (images.device(), images.dtype());
    let column = |v: [f64; 3]| {
        Tensor::<4>::from_data(TensorData::new(v.to_vec(), [1, 3, 1, 1]), (&device, dtype))
    };
    let mean = column(norm.mean);
    let std = column(norm.std);
    (images.div_scalar(255.0) - mean) / std
}

/// Loads an image and prepares it for a backbone: resize to `size × size`, normalize.
///
/// # Shapes
/// - output: `[1, 3, size, size]`
pub fn load_network_input(
    path: &Path,
    size: usize,
    norm: Normalization,
    device: &Device,
) -> Result<Tensor<4>> {
    Ok(load_rgb(path)?.network_input(size, norm, device))
}

impl RgbImage {
    /// The first image of a batch as bytes: values on the 0–255 scale, or normalized ones mapped
    /// back through `norm` (`(v·std + mean)·255`); clamped and rounded.
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, h, w]`
    pub fn from_tensor(images: Tensor<4>, norm: Option<Normalization>) -> Self {
        let [_, _, h, w] = images.dims();
        let v = crate::device::read_f64(images.slice([0..1, 0..3, 0..h, 0..w]));
        let mut pixels = vec![0u8; h * w * 3];
        for c in 0..3 {
            for i in 0..h * w {
                let x = match norm {
                    Some(n) => (v[c * h * w + i] * n.std[c] + n.mean[c]) * 255.0,
                    None => v[c * h * w + i],
                };
                pixels[i * 3 + c] = x.clamp(0.0, 255.0).round() as u8;
            }
        }
        Self {
            height: h,
            width: w,
            pixels,
        }
    }

    /// Writes the image as PNG atomically (temporary sibling, then rename).
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let buf =
            image::RgbImage::from_raw(self.width as u32, self.height as u32, self.pixels.clone())
                .expect("pixels hold height × width × 3 bytes");
        let mut bytes = Vec::new();
        buf.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| Error::Image {
            path: path.to_path_buf(),
            reason: format!("cannot encode PNG: {e}"),
        })?;
        crate::fsutil::write_atomic(path, &bytes)
    }
}
