//! In-process model inference for weir pipelines.
//!
//! A pipeline's `model` step scores events with a trained model. Calling out
//! to a model server would put a network round trip (and its tail latency)
//! inside every batch, so weir runs the model inside the engine instead: this
//! crate loads an ONNX file once with [tract](https://github.com/sonos/tract),
//! optimises it for a dynamic batch size, and then runs it on one batch of
//! feature rows at a time.
//!
//! The contract with the engine is deliberately narrow:
//!
//! * the model has exactly **one input** of shape `[N, F]`: `N` rows (the
//!   batch, any size) of `F` features (fixed by the model), element type
//!   `f32` or `f64`;
//! * every **output** has shape `[N]` or `[N, K]`: one row per input row, of
//!   one value or of `K` values;
//! * features go in as `f64` and results come out as `f64`, whatever the
//!   model's element types are (a float64 model sees the engine's values
//!   unchanged, which is what lets weir reproduce a reference scorer exactly;
//!   a float32 model gets them rounded to `f32`).
//!
//! [`OnnxModel::load`] checks all of this up front and reports a
//! [`ModelError`] naming the file, so a bad model fails the pipeline at
//! start-up rather than on the first event. [`load_metadata`] reads the
//! `model.toml` that sits beside a model and names its feature columns and
//! outputs.
//!
//! ```no_run
//! # fn main() -> Result<(), weir_model::ModelError> {
//! use std::path::Path;
//! let model = weir_model::OnnxModel::load(Path::new("examples/fraud/model/fraud_lr.onnx"))?;
//! assert_eq!(model.input_width(), 5);
//! // two rows of five features, row-major
//! let features = [1.0, 1.0, 0.5, 1.0, 1.0, 20.0, 3.0, 5.0, 20.0, 2.5];
//! let outputs = model.run(2, &features)?;
//! let scores = &outputs[0]; // output "score", one value per row
//! assert_eq!(scores.len(), 2);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::{Factoid, GenericFactoid};
use tract_onnx::tract_hir::internal::DimLike;

/// Everything that can go wrong loading or running a model. Every message
/// names the file it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The file could not be read, is not an ONNX model tract can load, or
    /// could not be prepared for a dynamic batch size.
    #[error("cannot load model {}: {message}", path.display())]
    Load {
        /// The model file.
        path: PathBuf,
        /// What went wrong (tract's words, when it comes from tract).
        message: String,
    },
    /// The model loaded but does not have the shape of inputs and outputs
    /// weir can drive (one `[N, F]` input, `[N]` / `[N, K]` outputs).
    #[error("invalid model {}: {reason}", path.display())]
    Invalid {
        /// The model file.
        path: PathBuf,
        /// Which rule it breaks and what was found instead.
        reason: String,
    },
    /// [`OnnxModel::run`] was given a feature slice whose length is not
    /// `rows * input_width`.
    #[error(
        "model {}: expected {width} features per row, got {values} values for {rows} rows",
        path.display()
    )]
    FeatureCount {
        /// The model file.
        path: PathBuf,
        /// Features per row the model takes.
        width: usize,
        /// Rows the caller asked for.
        rows: usize,
        /// Length of the feature slice the caller passed.
        values: usize,
    },
    /// tract failed while running the model on a batch.
    #[error("model {}: inference failed: {message}", path.display())]
    Run {
        /// The model file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// `model.toml` could not be read or parsed, or does not match the model.
    #[error("cannot read model metadata {}: {message}", path.display())]
    Metadata {
        /// The metadata file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The element type of the model's input tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InputType {
    F32,
    F64,
}

#[derive(Debug)]
struct Output {
    name: String,
    width: usize,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    plan: Arc<TypedRunnableModel>,
    input_type: InputType,
    input_width: usize,
    outputs: Vec<Output>,
}

/// An ONNX model, loaded, checked and optimised for any batch size, ready to
/// run.
///
/// `OnnxModel` is `Send + Sync` and cheap to clone: a clone is one reference
/// count increment and shares the optimised plan. Share one between shard
/// threads (by `&` or by clone, whichever is handier); each [`run`] call
/// carries its own scratch state, so concurrent calls do not contend.
///
/// [`run`]: OnnxModel::run
#[derive(Clone, Debug)]
pub struct OnnxModel {
    inner: Arc<Inner>,
}

// The engine moves models across shard threads; keep that a compile-time fact.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<OnnxModel>();
};

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

fn tract_message(e: &TractError) -> String {
    // `{:#}` prints the whole context chain on one line ("a: b: c").
    format!("{e:#}")
}

fn show_dims<'a>(dims: impl Iterator<Item = &'a GenericFactoid<TDim>>, open: bool) -> String {
    let mut parts: Vec<String> = dims
        .map(|d| match d {
            GenericFactoid::Only(d) => d.to_string(),
            GenericFactoid::Any => "?".to_string(),
        })
        .collect();
    if open {
        parts.push("..".to_string());
    }
    format!("[{}]", parts.join(", "))
}

fn show_shape(shape: &ShapeFact) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Whether tract can cast this output element type to `f64`.
fn numeric_output(dt: DatumType) -> bool {
    matches!(
        dt,
        DatumType::F16
            | DatumType::F32
            | DatumType::F64
            | DatumType::I8
            | DatumType::I16
            | DatumType::I32
            | DatumType::I64
            | DatumType::U8
            | DatumType::U16
            | DatumType::U32
            | DatumType::U64
            | DatumType::Bool
    )
}

impl OnnxModel {
    /// Loads the ONNX model at `path`, checks its signature and optimises it
    /// for a dynamic batch size.
    ///
    /// The model must have exactly one input of rank 2, `[N, F]`, with `F`
    /// fixed and element type `f32` or `f64`. Its batch dimension may be
    /// symbolic (an ONNX `dim_param`), unknown, or fixed in the file; it is
    /// made symbolic here either way, so a model exported with a fixed batch
    /// of 1 works if its graph does not depend on that size. Every output
    /// must have shape `[N]` or `[N, K]` with `K` fixed, and a numeric
    /// element type.
    pub fn load(path: &Path) -> Result<OnnxModel, ModelError> {
        // tract answers malformed models with errors; this is a second line
        // of defence so that a hostile file can not take the engine down
        // through a panic deep inside the loader.
        catch_unwind(AssertUnwindSafe(|| Self::load_checked(path))).unwrap_or_else(|panic| {
            Err(ModelError::Load {
                path: path.to_path_buf(),
                message: format!("tract panicked: {}", panic_message(&*panic)),
            })
        })
    }

    fn load_checked(path: &Path) -> Result<OnnxModel, ModelError> {
        let load_err = |message: String| ModelError::Load {
            path: path.to_path_buf(),
            message,
        };
        let invalid = |reason: String| ModelError::Invalid {
            path: path.to_path_buf(),
            reason,
        };

        // tract reads the file itself; read it here first so that a missing
        // file reads as the OS error rather than a parse failure.
        let bytes = std::fs::read(path).map_err(|e| load_err(e.to_string()))?;
        let mut model = tract_onnx::onnx()
            .model_for_read(&mut bytes.as_slice())
            .map_err(|e| load_err(tract_message(&e)))?;

        if model.inputs.len() != 1 {
            return Err(invalid(format!(
                "model must have exactly one input, found {}",
                model.inputs.len()
            )));
        }
        if model.outputs.is_empty() {
            return Err(invalid("model has no outputs".to_string()));
        }

        // --- input: [N, F], f32 or f64 ---
        let fact = model
            .input_fact(0)
            .map_err(|e| load_err(tract_message(&e)))?;
        let input_type = match fact.datum_type.concretize() {
            Some(DatumType::F64) => InputType::F64,
            Some(DatumType::F32) => InputType::F32,
            Some(other) => {
                return Err(invalid(format!(
                    "model input must be f32 or f64, found {other:?}"
                )))
            }
            None => {
                return Err(invalid(
                    "model input has no declared element type (must be f32 or f64)".to_string(),
                ))
            }
        };
        let dims: Vec<GenericFactoid<TDim>> = fact.shape.dims().cloned().collect();
        let shape_text = show_dims(dims.iter(), fact.shape.is_open());
        if fact.shape.is_open() || dims.len() != 2 {
            return Err(invalid(format!(
                "model input must be [N, F], found {shape_text}"
            )));
        }
        let input_width = match &dims[1] {
            GenericFactoid::Only(d) => d.to_usize().ok().filter(|&f| f > 0),
            GenericFactoid::Any => None,
        };
        let Some(input_width) = input_width else {
            let reason = "with F a fixed, positive number of features";
            return Err(invalid(format!(
                "model input must be [N, F] {reason}, found {shape_text}"
            )));
        };
        let batch = match &dims[0] {
            GenericFactoid::Only(TDim::Sym(s)) => s.clone(),
            _ => model.symbols.new_with_prefix("N"),
        };
        let dt = match input_type {
            InputType::F32 => DatumType::F32,
            InputType::F64 => DatumType::F64,
        };
        let batch_dim = TDim::Sym(batch);
        model
            .set_input_fact(
                0,
                InferenceFact::dt_shape(dt, tvec![batch_dim.clone(), TDim::from(input_width)]),
            )
            .map_err(|e| load_err(tract_message(&e)))?;

        let names: Vec<String> = model
            .outputs
            .iter()
            .enumerate()
            .map(|(ix, outlet)| match model.outlet_label(*outlet) {
                Some(label) if !label.is_empty() => label.to_string(),
                _ => format!("output_{ix}"),
            })
            .collect();

        let typed = model
            .into_optimized()
            .map_err(|e| load_err(tract_message(&e)))?;

        // --- outputs: [N] or [N, K] ---
        let mut outputs = Vec::with_capacity(names.len());
        for (ix, name) in names.into_iter().enumerate() {
            let fact = typed
                .output_fact(ix)
                .map_err(|e| load_err(tract_message(&e)))?;
            let shape: Vec<TDim> = fact.shape.iter().cloned().collect();
            let width = match shape.as_slice() {
                [n] if *n == batch_dim => Some(1),
                [n, k] if *n == batch_dim => k.to_usize().ok().filter(|&k| k > 0),
                _ => None,
            };
            let Some(width) = width else {
                return Err(invalid(format!(
                    "model output '{name}' must be [N] or [N, K] (N the input's batch, K fixed), \
                     found {}",
                    show_shape(&fact.shape)
                )));
            };
            if !numeric_output(fact.datum_type) {
                return Err(invalid(format!(
                    "model output '{name}' must be numeric, found {:?}",
                    fact.datum_type
                )));
            }
            outputs.push(Output { name, width });
        }

        let plan = typed
            .into_runnable()
            .map_err(|e| load_err(tract_message(&e)))?;
        Ok(OnnxModel {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                plan,
                input_type,
                input_width,
                outputs,
            }),
        })
    }

    /// The number of features per row, `F` of the `[N, F]` input.
    pub fn input_width(&self) -> usize {
        self.inner.input_width
    }

    /// Values per row of each output, in output order: 1 for `[N]` or
    /// `[N, 1]`, `K` for `[N, K]`.
    pub fn output_widths(&self) -> Vec<usize> {
        self.inner.outputs.iter().map(|o| o.width).collect()
    }

    /// The outputs' names as the ONNX file declares them, in output order.
    pub fn output_names(&self) -> Vec<String> {
        self.inner.outputs.iter().map(|o| o.name.clone()).collect()
    }

    /// The file the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs the model on `rows` rows of row-major features
    /// (`features.len() == rows * input_width()`); the values are converted
    /// to the model's input type (unchanged for an `f64` model).
    ///
    /// Returns, per model output, a `Vec<f64>` of `rows * width` values,
    /// row-major. `rows == 0` returns empty vectors without running the
    /// model.
    pub fn run(&self, rows: usize, features: &[f64]) -> Result<Vec<Vec<f64>>, ModelError> {
        // As in `load`: a model that passed the checks but trips an
        // assertion in tract on real data is an error, not a crash.
        catch_unwind(AssertUnwindSafe(|| self.run_checked(rows, features))).unwrap_or_else(
            |panic| {
                Err(ModelError::Run {
                    path: self.inner.path.clone(),
                    message: format!("tract panicked: {}", panic_message(&*panic)),
                })
            },
        )
    }

    fn run_checked(&self, rows: usize, features: &[f64]) -> Result<Vec<Vec<f64>>, ModelError> {
        let inner = &*self.inner;
        let width = inner.input_width;
        if rows.checked_mul(width) != Some(features.len()) {
            return Err(ModelError::FeatureCount {
                path: inner.path.clone(),
                width,
                rows,
                values: features.len(),
            });
        }
        if rows == 0 {
            return Ok(vec![Vec::new(); inner.outputs.len()]);
        }
        let run_err = |e: TractError| ModelError::Run {
            path: inner.path.clone(),
            message: tract_message(&e),
        };

        let input = match inner.input_type {
            InputType::F64 => Tensor::from_shape::<f64>(&[rows, width], features),
            InputType::F32 => to_f32_tensor(rows, width, features),
        }
        .map_err(run_err)?;

        let results = inner
            .plan
            .run(tvec![input.into_tvalue()])
            .map_err(run_err)?;
        if results.len() != inner.outputs.len() {
            return Err(ModelError::Run {
                path: inner.path.clone(),
                message: format!(
                    "model returned {} outputs, expected {}",
                    results.len(),
                    inner.outputs.len()
                ),
            });
        }
        results
            .iter()
            .zip(&inner.outputs)
            .map(|(value, output)| {
                let values = to_f64_vec(value).map_err(run_err)?;
                if values.len() != rows * output.width {
                    return Err(ModelError::Run {
                        path: inner.path.clone(),
                        message: format!(
                            "output '{}' has shape {:?}, expected [{rows}, {}]",
                            output.name,
                            value.shape(),
                            output.width
                        ),
                    });
                }
                Ok(values)
            })
            .collect()
    }
}

fn to_f32_tensor(rows: usize, width: usize, features: &[f64]) -> TractResult<Tensor> {
    let mut tensor = Tensor::zero::<f32>(&[rows, width])?;
    {
        let mut view = tensor.try_as_plain_ram_mut()?;
        let dst = view.as_slice_mut::<f32>()?;
        for (d, s) in dst.iter_mut().zip(features) {
            *d = *s as f32;
        }
    }
    Ok(tensor)
}

/// Copies a result tensor out as row-major `f64`s, casting if needed.
fn to_f64_vec(value: &Tensor) -> TractResult<Vec<f64>> {
    let cast = value.cast_to::<f64>()?;
    let view = cast.to_plain_array_view::<f64>()?;
    Ok(match view.as_slice() {
        Some(slice) => slice.to_vec(),
        // Not in standard layout: iterate in logical (row-major) order.
        None => view.iter().copied().collect(),
    })
}

/// What `model.toml` says about a model: its name and version, and the
/// names of its feature columns and outputs.
///
/// ```toml
/// name = "fraud-lr"
/// version = "1"
/// inputs = ["f_amount", "f_count", "f_sum", "f_max", "f_ratio"]
/// outputs = ["score"]
/// ```
///
/// `inputs` names the `F` input columns in order. `outputs` names the model's
/// output columns in order (output 0's columns, then output 1's, ...); for
/// the usual model with one `[N]` or `[N, 1]` output that is one name.
/// Keys other than these four are ignored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct ModelMetadata {
    /// The model's name, e.g. `"fraud-lr"`.
    pub name: String,
    /// The model's version, as a string (`"1"`, `"2024-05-01"`, ...).
    pub version: String,
    /// Names of the input features, in column order.
    pub inputs: Vec<String>,
    /// Names of the output columns, in order.
    pub outputs: Vec<String>,
}

impl ModelMetadata {
    /// Checks that this metadata fits `model`: one input name per feature
    /// column and one output name per output column.
    pub fn check(&self, model: &OnnxModel) -> Result<(), ModelError> {
        let columns: usize = model.output_widths().iter().sum();
        let mismatch = if self.inputs.len() != model.input_width() {
            Some(format!(
                "{} input names for a model taking {} features per row",
                self.inputs.len(),
                model.input_width()
            ))
        } else if self.outputs.len() != columns {
            Some(format!(
                "{} output names for a model with {} output columns",
                self.outputs.len(),
                columns
            ))
        } else {
            None
        };
        match mismatch {
            Some(message) => Err(ModelError::Metadata {
                path: model.path().to_path_buf(),
                message,
            }),
            None => Ok(()),
        }
    }
}

impl fmt::Display for ModelMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{}", self.name, self.version)
    }
}

/// Reads `dir/model.toml`.
///
/// The four keys are required; `inputs` and `outputs` must be non-empty and
/// hold no empty or duplicate names.
pub fn load_metadata(dir: &Path) -> Result<ModelMetadata, ModelError> {
    let path = dir.join("model.toml");
    let err = |message: String| ModelError::Metadata {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
    let meta: ModelMetadata =
        toml::from_str(&text).map_err(|e| err(e.to_string().trim_end().to_string()))?;
    if meta.name.trim().is_empty() {
        return Err(err("`name` is empty".to_string()));
    }
    for (key, names) in [("inputs", &meta.inputs), ("outputs", &meta.outputs)] {
        if names.is_empty() {
            return Err(err(format!("`{key}` is empty")));
        }
        for (i, name) in names.iter().enumerate() {
            if name.trim().is_empty() {
                return Err(err(format!("`{key}` has an empty name at position {i}")));
            }
            if names[..i].contains(name) {
                return Err(err(format!("`{key}` names '{name}' twice")));
            }
        }
    }
    Ok(meta)
}
