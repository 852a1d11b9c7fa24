//! The embedded dataset: procedurally generated objects for a fresh machine with no datasets.
//!
//! Six categories (fish, house, car, star, mushroom, bottle), each drawn from semantic parts
//! whose proportions vary per instance, with a per-category appearance (texture kind and colours:
//! solid, stripes, dots or gradient, painted in the object's own frame so it deforms with the
//! object) that every instance jitters, over a cluttered background (smooth colour field plus
//! distractor shapes of random colours and textures).
//! Every instance gets a random pose (rotation ±30°, anisotropic scale, translation) and a smooth
//! non-rigid deformation. Keypoints sit at semantic parts (the fish's nose, the car's wheel
//! centres, ...) and are used only for evaluation.
//!
//! Rendering maps every pixel `p` back to the object frame, `c = A⁻¹(p + d(p) − t)`; a keypoint
//! `c` is placed at the `p` solving `p + d(p) = A·c + t` (fixed-point iteration; `|∇d| < 0.53`).
//! Everything is a pure function of `(seed, class, instance)`.
//!
//! Splits are by instance: the first `train` instances of every class form training pairs, the
//! next `validation` instances validation pairs, the rest test pairs; pairs are all ordered pairs
//! of distinct instances of one class within a split, so the three pair sets share no image.

use rand::Rng;

use super::image::RgbImage;
use super::rng::{Stream, sample_rng};

/// Category names, in class-index order.
pub const CLASSES: [&str; 6] = ["fish", "house", "car", "star", "mushroom", "bottle"];

/// Sizes of the embedded dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmbeddedConfig {
    /// Generation seed.
    pub seed: u64,
    /// Image side in pixels.
    pub size: usize,
    /// Training instances per class.
    pub train: usize,
    /// Validation instances per class.
    pub validation: usize,
    /// Test instances per class.
    pub test: usize,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            seed: 2018,
            size: 240,
            train: 24,
            validation: 6,
            test: 8,
        }
    }
}

/// A generated image with its keypoints (1-based pixels, class-specific order).
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// Class index into [`CLASSES`].
    pub class: usize,
    /// Instance index within its class.
    pub index: usize,
    /// The picture.
    pub image: RgbImage,
    /// Semantic keypoints `(x, y)`, 1-based pixel coordinates.
    pub keypoints: Vec<(f64, f64)>,
}

/// Which split a pair belongs to (`"train"`, `"validation"`, `"test"` on the command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training pairs.
    Train,
    /// Validation pairs.
    Validation,
    /// Test pairs.
    Test,
}

/// The whole generated dataset: instances and pairs (indices into `instances`).
#[derive(Clone, Debug)]
pub struct EmbeddedDataset {
    /// Configuration it was generated from.
    pub config: EmbeddedConfig,
    /// All instances, class-major.
    pub instances: Vec<Instance>,
    /// Ordered (source, target) pairs of training instances of the same class.
    pub train: Vec<(usize, usize)>,
    /// Validation pairs.
    pub validation: Vec<(usize, usize)>,
    /// Test pairs.
    pub test: Vec<(usize, usize)>,
}

impl EmbeddedDataset {
    /// Generates the dataset (parallel over instances; identical output for identical config).
    pub fn generate(config: EmbeddedConfig) -> Self {
        let per_class = config.train + config.validation + config.test;
        let jobs: Vec<(usize, usize)> = (0..CLASSES.len())
            .flat_map(|c| (0..per_class).map(move |i| (c, i)))
            .collect();
        let instances = parallel_map(&jobs, |&(class, index)| {
            render_instance(&config, class, index)
        });
        let mut splits = (Vec::new(), Vec::new(), Vec::new());
        for class in 0..CLASSES.len() {
            let base = class * per_class;
            let ranges = [
                (0, config.train),
                (config.train, config.train + config.validation),
                (config.train + config.validation, per_class),
            ];
            for (k, (lo, hi)) in ranges.into_iter().enumerate() {
                let out = match k {
                    0 => &mut splits.0,
                    1 => &mut splits.1,
                    _ => &mut splits.2,
                };
                for a in lo..hi {
                    for b in lo..hi {
                        if a != b {
                            out.push((base + a, base + b));
                        }
                    }
                }
            }
        }
        Self {
            config,
            instances,
            train: splits.0,
            validation: splits.1,
            test: splits.2,
        }
    }

    /// The pairs of a split.
    pub fn pairs(&self, split: Split) -> &[(usize, usize)] {
        match split {
            Split::Train => &self.train,
            Split::Validation => &self.validation,
            Split::Test => &self.test,
        }
    }
}

/// Maps `f` over `items` on all cores, keeping order.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len().max(1));
    let chunk = items.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("generator thread"))
            .collect()
    })
}

type Rgb = [f64; 3];
type P = (f64, f64);

/// A filled primitive in the object frame.
#[derive(Clone, Debug)]
enum Shape {
    Ellipse { c: P, r: P, paint: Paint },
    Polygon { v: Vec<P>, paint: Paint },
    Rect { lo: P, hi: P, paint: Paint },
}

/// How a primitive is coloured, evaluated at its object-frame point.
#[derive(Clone, Copy, Debug)]
enum Paint {
    Solid(Rgb),
    Stripes {
        a: Rgb,
        b: Rgb,
        freq: f64,
        angle: f64,
    },
    Dots {
        a: Rgb,
        b: Rgb,
        freq: f64,
    },
    Gradient {
        a: Rgb,
        b: Rgb,
        angle: f64,
    },
}

impl Paint {
    fn at(&self, (x, y): P) -> Rgb {
        match *self {
            Paint::Solid(c) => c,
            Paint::Stripes { a, b, freq, angle } => {
                let t = (x * angle.cos() + y * angle.sin()) * freq;
                if t.sin() > 0.0 { a } else { b }
            }
            Paint::Dots { a, b, freq } => {
                let (u, v) = (
                    (x * freq).rem_euclid(1.0) - 0.5,
                    (y * freq).rem_euclid(1.0) - 0.5,
                );
                if u * u + v * v < 0.08 { b } else { a }
            }
            Paint::Gradient { a, b, angle } => {
                let t = ((x * angle.cos() + y * angle.sin()) * 0.5 + 0.5).clamp(0.0, 1.0);
                [0, 1, 2].map(|i| a[i] * (1.0 - t) + b[i] * t)
            }
        }
    }
}

impl Shape {
    fn paint_at(&self, p: P) -> Option<Rgb> {
        let (inside, paint) = match self {
            Shape::Ellipse { c, r, paint } => {
                let (dx, dy) = ((p.0 - c.0) / r.0, (p.1 - c.1) / r.1);
                (dx * dx + dy * dy <= 1.0, paint)
            }
            Shape::Rect { lo, hi, paint } => (
                p.0 >= lo.0 && p.0 <= hi.0 && p.1 >= lo.1 && p.1 <= hi.1,
                paint,
            ),
            Shape::Polygon { v, paint } => (inside_polygon(v, p), paint),
        };
        inside.then(|| paint.at(p))
    }
}

/// Even-odd rule.
fn inside_polygon(v: &[P], p: P) -> bool {
    let mut inside = false;
    let mut j = v.len() - 1;
    for i in 0..v.len() {
        let (a, b) = (v[i], v[j]);
        if (a.1 > p.1) != (b.1 > p.1) && p.0 < (b.0 - a.0) * (p.1 - a.1) / (b.1 - a.1) + a.0 {
            inside = !inside;
        }
        j = i;
    }
    inside
}

fn color(rng: &mut impl Rng) -> Rgb {
    [rng.random::<f64>(), rng.random(), rng.random()]
}

/// A colour far enough from `other` to be distinguishable.
fn contrasting(rng: &mut impl Rng, other: Rgb) -> Rgb {
    loop {
        let c = color(rng);
        let d: f64 = (0..3).map(|i| (c[i] - other[i]).powi(2)).sum();
        if d > 0.25 {
            return c;
        }
    }
}

fn body_paint(rng: &mut impl Rng) -> Paint {
    let a = color(rng);
    let b = contrasting(rng, a);
    match rng.random_range(0..4) {
        0 => Paint::Solid(a),
        1 => Paint::Stripes {
            a,
            b,
            freq: rng.random_range(8.0..18.0),
            angle: rng.random_range(0.0..3.2),
        },
        2 => Paint::Dots {
            a,
            b,
            freq: rng.random_range(3.0..6.0),
        },
        _ => Paint::Gradient {
            a,
            b,
            angle: rng.random_range(0.0..6.3),
        },
    }
}

/// A category's typical appearance: its texture kind and colours. Instances jitter the colours
/// (±0.15 per channel) and the texture's frequency and angle, so a category looks alike across
/// instances (there is something to match) without any two instances being the same.
struct ClassStyle {
    body: Paint,
    accent: Rgb,
}

fn class_style(seed: u64, class: usize) -> ClassStyle {
    let mut rng = sample_rng(seed, Stream::Embedded, 1_000 + class as u64, 0);
    ClassStyle {
        body: body_paint(&mut rng),
        accent: color(&mut rng),
    }
}

fn jitter(rng: &mut impl Rng, c: Rgb) -> Rgb {
    c.map(|v| (v + rng.random_range(-0.15..0.15)).clamp(0.0, 1.0))
}

/// An instance's variation of its category's paint.
fn instance_paint(rng: &mut impl Rng, paint: Paint) -> Paint {
    match paint {
        Paint::Solid(a) => Paint::Solid(jitter(rng, a)),
        Paint::Stripes { a, b, freq, angle } => Paint::Stripes {
            a: jitter(rng, a),
            b: jitter(rng, b),
            freq: freq * rng.random_range(0.8..1.25),
            angle: angle + rng.random_range(-0.3..0.3),
        },
        Paint::Dots { a, b, freq } => Paint::Dots {
            a: jitter(rng, a),
            b: jitter(rng, b),
            freq: freq * rng.random_range(0.8..1.25),
        },
        Paint::Gradient { a, b, angle } => Paint::Gradient {
            a: jitter(rng, a),
            b: jitter(rng, b),
            angle: angle + rng.random_range(-0.3..0.3),
        },
    }
}

/// The object of one instance: primitives back to front, and keypoints, in the object frame
/// (`x` right, `y` down, roughly within `[-1, 1]²`).
fn object(class: usize, style: &ClassStyle, rng: &mut impl Rng) -> (Vec<Shape>, Vec<P>) {
    let body = instance_paint(rng, style.body);
    let accent = Paint::Solid(jitter(rng, style.accent));
    let mut u = |lo: f64, hi: f64| rng.random_range(lo..hi);
    let dark = Paint::Solid([u(0.0, 0.2), u(0.0, 0.2), u(0.0, 0.2)]);
    let light = Paint::Solid([u(0.75, 1.0), u(0.75, 1.0), u(0.75, 1.0)]);
    match class {
        0 => {
            // fish: nose, eye, dorsal-fin tip, tail top, tail bottom, belly, tail joint
            let (rx, ry) = (0.6 * u(0.85, 1.15), 0.32 * u(0.8, 1.2));
            let tail = (-rx - 0.35 * u(0.8, 1.2), 0.3 * u(0.8, 1.2));
            let fin = (0.1 * u(-1.0, 1.0), -ry - 0.25 * u(0.8, 1.2));
            let eye = (0.65 * rx, -0.3 * ry);
            let shapes = vec![
                Shape::Polygon {
                    v: vec![(-rx + 0.08, 0.0), (tail.0, -tail.1), (tail.0, tail.1)],
                    paint: accent,
                },
                Shape::Polygon {
                    v: vec![(-0.2, -ry + 0.08), fin, (0.25, -ry + 0.08)],
                    paint: accent,
                },
                Shape::Ellipse {
                    c: (0.0, 0.0),
                    r: (rx, ry),
                    paint: body,
                },
                Shape::Ellipse {
                    c: eye,
                    r: (0.07, 0.07),
                    paint: dark,
                },
            ];
            let kps = vec![
                (rx, 0.0),
                eye,
                fin,
                (tail.0, -tail.1),
                (tail.0, tail.1),
                (0.0, ry),
                (-rx, 0.0),
            ];
            (shapes, kps)
        }
        1 => {
            // house: apex, left eave, right eave, bottom-left, bottom-right, door top, window centre
            let (w, h) = (0.55 * u(0.85, 1.15), 0.6 * u(0.85, 1.15));
            let apex = (u(-0.15, 0.15), -0.15 - 0.55 * u(0.8, 1.2));
            let (el, er) = ((-w - 0.12, -0.12), (w + 0.12, -0.12));
            let door_x = u(-0.5, 0.5) * w * 0.6;
            let (dw, dh) = (0.12 * u(0.8, 1.2), 0.3 * u(0.8, 1.2));
            let win = (if door_x > 0.0 { -0.5 * w } else { 0.5 * w }, 0.15);
            let shapes = vec![
                Shape::Rect {
                    lo: (-w, -0.12),
                    hi: (w, h),
                    paint: body,
                },
                Shape::Polygon {
                    v: vec![apex, el, er],
                    paint: accent,
                },
                Shape::Rect {
                    lo: (door_x - dw, h - 2.0 * dh),
                    hi: (door_x + dw, h),
                    paint: dark,
                },
                Shape::Rect {
                    lo: (win.0 - 0.1, win.1 - 0.1),
                    hi: (win.0 + 0.1, win.1 + 0.1),
                    paint: light,
                },
            ];
            let kps = vec![apex, el, er, (-w, h), (w, h), (door_x, h - 2.0 * dh), win];
            (shapes, kps)
        }
        2 => {
            // car: front bumper, rear bumper, front wheel, rear wheel, roof front, roof rear
            let (l, top) = (0.8 * u(0.9, 1.1), 0.35 * u(0.8, 1.2));
            let r = 0.17 * u(0.85, 1.15);
            let (rf, rr) = (0.3 * u(0.7, 1.2), -0.35 * u(0.7, 1.2));
            let shapes = vec![
                Shape::Polygon {
                    v: vec![(rr, -top), (rf, -top), (0.55, -0.05), (-0.6, -0.05)],
                    paint: accent,
                },
                Shape::Polygon {
                    v: vec![
                        (rr + 0.05, -top + 0.06),
                        (rf - 0.05, -top + 0.06),
                        (0.4, -0.07),
                        (-0.5, -0.07),
                    ],
                    paint: light,
                },
                Shape::Rect {
                    lo: (-l, -0.05),
                    hi: (l, 0.3),
                    paint: body,
                },
                Shape::Ellipse {
                    c: (0.5 * l, 0.3),
                    r: (r, r),
                    paint: dark,
                },
                Shape::Ellipse {
                    c: (-0.5 * l, 0.3),
                    r: (r, r),
                    paint: dark,
                },
            ];
            let kps = vec![
                (l, 0.12),
                (-l, 0.12),
                (0.5 * l, 0.3),
                (-0.5 * l, 0.3),
                (rf, -top),
                (rr, -top),
            ];
            (shapes, kps)
        }
        3 => {
            // star: five tips (clockwise from the top) and the centre
            let radius = 0.75 * u(0.85, 1.1);
            let inner = radius * u(0.35, 0.5);
            let tips: Vec<P> = (0..5)
                .map(|k| {
                    let a =
                        -std::f64::consts::FRAC_PI_2 + k as f64 * 2.0 * std::f64::consts::PI / 5.0;
                    let r = radius * u(0.85, 1.15);
                    (r * a.cos(), r * a.sin())
                })
                .collect();
            let mut v = Vec::new();
            for (k, &tip) in tips.iter().enumerate() {
                v.push(tip);
                let a = -std::f64::consts::FRAC_PI_2
                    + (k as f64 + 0.5) * 2.0 * std::f64::consts::PI / 5.0;
                v.push((inner * a.cos(), inner * a.sin()));
            }
            let shapes = vec![
                Shape::Polygon { v, paint: body },
                Shape::Ellipse {
                    c: (0.0, 0.0),
                    r: (0.12, 0.12),
                    paint: accent,
                },
                Shape::Ellipse {
                    c: tips[0],
                    r: (0.06, 0.06),
                    paint: dark,
                },
            ];
            let mut kps = tips;
            kps.push((0.0, 0.0));
            (shapes, kps)
        }
        4 => {
            // mushroom: cap top, cap left, cap right, stem bottom-left, stem bottom-right, gill centre
            let (cw, ch) = (0.65 * u(0.85, 1.15), 0.45 * u(0.8, 1.2));
            let (sw, sh) = (0.15 * u(0.8, 1.3), 0.6 * u(0.8, 1.2));
            let base = -0.05;
            let cap: Vec<P> = (0..=16)
                .map(|k| {
                    let a = std::f64::consts::PI * k as f64 / 16.0;
                    (-cw * a.cos(), base - ch * a.sin())
                })
                .collect();
            let shapes = vec![
                Shape::Rect {
                    lo: (-sw, base),
                    hi: (sw, base + sh),
                    paint: accent,
                },
                Shape::Polygon {
                    v: cap,
                    paint: body,
                },
                Shape::Ellipse {
                    c: (-0.3 * cw, base - 0.55 * ch),
                    r: (0.09, 0.07),
                    paint: light,
                },
            ];
            let kps = vec![
                (0.0, base - ch),
                (-cw, base),
                (cw, base),
                (-sw, base + sh),
                (sw, base + sh),
                (0.0, base),
            ];
            (shapes, kps)
        }
        _ => {
            // bottle: neck top, shoulder left, shoulder right, base left, base right, label centre
            let (bw, bh) = (0.3 * u(0.8, 1.2), 0.55 * u(0.85, 1.15));
            let (nw, nh) = (0.09 * u(0.8, 1.2), 0.35 * u(0.8, 1.2));
            let shoulder = -0.1;
            let label = 0.2 * u(0.8, 1.2);
            let shapes = vec![
                Shape::Polygon {
                    v: vec![
                        (-nw, shoulder - 0.18 - nh),
                        (nw, shoulder - 0.18 - nh),
                        (nw, shoulder - 0.18),
                        (bw, shoulder),
                        (bw, shoulder + bh + 0.3),
                        (-bw, shoulder + bh + 0.3),
                        (-bw, shoulder),
                        (-nw, shoulder - 0.18),
                    ],
                    paint: body,
                },
                Shape::Rect {
                    lo: (-bw, 0.25),
                    hi: (bw, 0.25 + label),
                    paint: light,
                },
                Shape::Rect {
                    lo: (-nw - 0.02, shoulder - 0.2 - nh),
                    hi: (nw + 0.02, shoulder - 0.12 - nh),
                    paint: accent,
                },
            ];
            let kps = vec![
                (0.0, shoulder - 0.18 - nh),
                (-bw, shoulder),
                (bw, shoulder),
                (-bw, shoulder + bh + 0.3),
                (bw, shoulder + bh + 0.3),
                (0.0, 0.25 + label / 2.0),
            ];
            (shapes, kps)
        }
    }
}

/// Pose and deformation: `p ↦ c = A⁻¹(p + d(p) − t)`.
struct Pose {
    a: [[f64; 2]; 2],
    a_inv: [[f64; 2]; 2],
    t: P,
    waves: Vec<(f64, f64, f64, f64, f64)>, // amplitude, frequency, direction angle, phase, displacement angle
}

impl Pose {
    fn random(rng: &mut impl Rng) -> Self {
        let angle = rng.random_range(-30.0f64..30.0).to_radians();
        let s = rng.random_range(0.45..0.7);
        let (sx, sy) = (
            s * rng.random_range(0.85..1.15),
            s * rng.random_range(0.85..1.15),
        );
        let (c, si) = (angle.cos(), angle.sin());
        let a = [[c * sx, -si * sy], [si * sx, c * sy]];
        let det = a[0][0] * a[1][1] - a[0][1] * a[1][0];
        let a_inv = [
            [a[1][1] / det, -a[0][1] / det],
            [-a[1][0] / det, a[0][0] / det],
        ];
        let t = (rng.random_range(-0.25..0.25), rng.random_range(-0.25..0.25));
        let waves = (0..3)
            .map(|_| {
                (
                    rng.random_range(0.0..0.05),
                    rng.random_range(1.5..3.5),
                    rng.random_range(0.0..6.3),
                    rng.random_range(0.0..6.3),
                    rng.random_range(0.0..6.3),
                )
            })
            .collect();
        Self { a, a_inv, t, waves }
    }

    /// The smooth displacement `d(p)`; `|∇d| ≤ 3 · 0.05 · 3.5 ≈ 0.53 < 1`, so the fixed-point
    /// iteration of [`Pose::to_image`] contracts.
    fn d(&self, p: P) -> P {
        self.waves
            .iter()
            .fold((0.0, 0.0), |acc, &(amp, freq, dir, phase, disp)| {
                let s = amp * ((p.0 * dir.cos() + p.1 * dir.sin()) * freq + phase).sin();
                (acc.0 + s * disp.cos(), acc.1 + s * disp.sin())
            })
    }

    fn to_object(&self, p: P) -> P {
        let d = self.d(p);
        let q = (p.0 + d.0 - self.t.0, p.1 + d.1 - self.t.1);
        (
            self.a_inv[0][0] * q.0 + self.a_inv[0][1] * q.1,
            self.a_inv[1][0] * q.0 + self.a_inv[1][1] * q.1,
        )
    }

    fn to_image(&self, c: P) -> P {
        let q = (
            self.a[0][0] * c.0 + self.a[0][1] * c.1 + self.t.0,
            self.a[1][0] * c.0 + self.a[1][1] * c.1 + self.t.1,
        );
        let mut p = q;
        for _ in 0..50 {
            let d = self.d(p);
            p = (q.0 - d.0, q.1 - d.1);
        }
        p
    }
}

/// Background: a smooth two-colour field plus distractor shapes in image coordinates.
fn background(rng: &mut impl Rng) -> (Rgb, Rgb, (f64, f64, f64), Vec<Shape>) {
    let (a, b) = (color(rng), color(rng));
    let field = (
        rng.random_range(0.5..3.0),
        rng.random_range(0.0..6.3),
        rng.random_range(0.0..6.3),
    );
    let n = rng.random_range(4..9);
    let clutter = (0..n)
        .map(|_| {
            let c = (rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0));
            let paint = if rng.random_bool(0.5) {
                Paint::Solid(color(rng))
            } else {
                body_paint(rng)
            };
            match rng.random_range(0..3) {
                0 => Shape::Ellipse {
                    c,
                    r: (rng.random_range(0.05..0.25), rng.random_range(0.05..0.25)),
                    paint,
                },
                1 => {
                    let (w, h) = (rng.random_range(0.05..0.3), rng.random_range(0.05..0.3));
                    Shape::Rect {
                        lo: (c.0 - w, c.1 - h),
                        hi: (c.0 + w, c.1 + h),
                        paint,
                    }
                }
                _ => {
                    let v = (0..3)
                        .map(|_| {
                            (
                                c.0 + rng.random_range(-0.3..0.3),
                                c.1 + rng.random_range(-0.3..0.3),
                            )
                        })
                        .collect();
                    Shape::Polygon { v, paint }
                }
            }
        })
        .collect();
    (a, b, field, clutter)
}

/// Renders instance `index` of `class`.
pub fn render_instance(config: &EmbeddedConfig, class: usize, index: usize) -> Instance {
    let mut rng = sample_rng(config.seed, Stream::Embedded, class as u64, index as u64);
    let (shapes, kps) = object(class, &class_style(config.seed, class), &mut rng);
    let pose = Pose::random(&mut rng);
    let (bg_a, bg_b, (freq, dir, phase), clutter) = background(&mut rng);
    let n = config.size;
    let to_norm = |i: usize| -1.0 + 2.0 * i as f64 / (n - 1) as f64;
    let mut pixels = Vec::with_capacity(n * n * 3);
    for yi in 0..n {
        for xi in 0..n {
            let p = (to_norm(xi), to_norm(yi));
            let t = 0.5 + 0.5 * ((p.0 * dir.cos() + p.1 * dir.sin()) * freq + phase).sin();
            let mut rgb = [0, 1, 2].map(|i| bg_a[i] * (1.0 - t) + bg_b[i] * t);
            for s in &clutter {
                if let Some(c) = s.paint_at(p) {
                    rgb = c;
                }
            }
            let c = pose.to_object(p);
            for s in &shapes {
                if let Some(col) = s.paint_at(c) {
                    rgb = col;
                }
            }
            pixels.extend(rgb.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8));
        }
    }
    let keypoints = kps
        .into_iter()
        .map(|c| {
            let p = pose.to_image(c);
            let px = |u: f64| (u + 1.0) / 2.0 * (n - 1) as f64 + 1.0;
            (px(p.0), px(p.1))
        })
        .collect();
    Instance {
        class,
        index,
        image: RgbImage {
            height: n,
            width: n,
            pixels,
        },
        keypoints,
    }
}

/// Pairs of one split of the embedded dataset as a [`super::loader::PairSource`]
/// (no augmentation: pose variation is built in).
pub struct EmbeddedPairs {
    /// The generated dataset.
    pub dataset: std::sync::Arc<EmbeddedDataset>,
    /// Which pairs.
    pub split: Split,
    /// Network input side.
    pub size: usize,
    /// Backbone normalization.
    pub norm: crate::backbone::Normalization,
}

impl EmbeddedPairs {
    /// One image as network input.
    ///
    /// # Shapes
    /// - output: `[1, 3, size, size]`
    pub fn input(&self, instance: usize, device: &burn::tensor::Device) -> burn::tensor::Tensor<4> {
        self.dataset.instances[instance]
            .image
            .network_input(self.size, self.norm, device)
    }
}

impl super::loader::PairSource for EmbeddedPairs {
    fn len(&self) -> usize {
        self.dataset.pairs(self.split).len()
    }

    fn sample(&self, index: usize, _epoch: u64) -> crate::Result<super::loader::PairSample> {
        let (s, t) = self.dataset.pairs(self.split)[index];
        let device = crate::device::inference();
        Ok(super::loader::PairSample {
            source: self.input(s, &device).into_data(),
            target: self.input(t, &device).into_data(),
            truth: None,
        })
    }
}

/// The pairs of a split as keypoint pairs (paths `images/<class>_<index>.png`).
pub fn keypoint_pairs(dataset: &EmbeddedDataset, split: Split) -> Vec<super::pf::KeypointPair> {
    dataset
        .pairs(split)
        .iter()
        .map(|&(s, t)| {
            let (a, b) = (&dataset.instances[s], &dataset.instances[t]);
            super::pf::KeypointPair {
                source: image_path(a),
                target: image_path(b),
                class: CLASSES[a.class].to_string(),
                source_points: a.keypoints.clone(),
                target_points: b.keypoints.clone(),
            }
        })
        .collect()
}

/// Relative path of an instance's image in a written dataset.
pub fn image_path(instance: &Instance) -> std::path::PathBuf {
    std::path::PathBuf::from(format!(
        "images/{}_{:03}.png",
        CLASSES[instance.class], instance.index
    ))
}

/// Writes the dataset: `images/*.png`, weak-pair CSVs `{train,val,test}_pairs.csv` and keypoint
/// CSVs `{val,test}_keypoints.csv` (`source_image,target_image,class,XA,YA,XB,YB`, `;`-separated,
/// the PF-PASCAL layout).
pub fn write(dataset: &EmbeddedDataset, dir: &std::path::Path) -> crate::Result<()> {
    use crate::error::Error;
    let images = dir.join("images");
    std::fs::create_dir_all(&images).map_err(|e| Error::io(&images, e))?;
    for inst in &dataset.instances {
        let path = dir.join(image_path(inst));
        let buffer = image::RgbImage::from_raw(
            inst.image.width as u32,
            inst.image.height as u32,
            inst.image.pixels.clone(),
        )
        .expect("pixel buffer matches its size");
        buffer.save(&path).map_err(|e| Error::Image {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    }
    for (split, name) in [
        (Split::Train, "train"),
        (Split::Validation, "val"),
        (Split::Test, "test"),
    ] {
        let pairs = keypoint_pairs(dataset, split);
        let weak: Vec<super::weak::WeakPair> = pairs
            .iter()
            .map(|p| super::weak::WeakPair {
                source: p.source.clone(),
                target: p.target.clone(),
                class: p.class.clone(),
                flip: false,
            })
            .collect();
        super::weak::write_pairs(&dir.join(format!("{name}_pairs.csv")), &weak)?;
        if split != Split::Train {
            let mut text = super::pf::PASCAL_HEADER.join(",") + "\n";
            for p in &pairs {
                let join = |v: Vec<f64>| {
                    v.iter()
                        .map(|x| format!("{x:.3}"))
                        .collect::<Vec<_>>()
                        .join(";")
                };
                text += &format!(
                    "{},{},{},{},{},{},{}\n",
                    p.source.display(),
                    p.target.display(),
                    p.class,
                    join(p.source_points.iter().map(|q| q.0).collect()),
                    join(p.source_points.iter().map(|q| q.1).collect()),
                    join(p.target_points.iter().map(|q| q.0).collect()),
                    join(p.target_points.iter().map(|q| q.1).collect()),
                );
            }
            crate::fsutil::write_atomic(
                &dir.join(format!("{name}_keypoints.csv")),
                text.as_bytes(),
            )?;
        }
    }
    Ok(())
}
