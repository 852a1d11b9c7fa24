//! Data: images and their preprocessing.

pub mod image;
