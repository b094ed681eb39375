//! The model step: gathers named feature columns into a row-major matrix,
//! runs the model once per batch, and appends its outputs as columns.
//! [`OnnxShapes`] reads a model's shape for `weir validate`.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch, UInt32Array,
    UInt64Array,
};
use arrow_schema::SchemaRef;
use weir_config::Model;
use weir_model::OnnxModel;

use super::{Ctx, Operator, Outputs};
use crate::dead_letter::Rejected;
use crate::EngineError;

/// Reads model files for [`weir_config::Checks`]: the shape an ONNX file
/// declares, which [`ModelStep::new`] holds the step to when it starts.
pub struct OnnxShapes;

impl weir_config::ModelShapes for OnnxShapes {
    fn shape(&self, path: &Path) -> Result<weir_config::ModelShape, String> {
        let model = OnnxModel::load(path).map_err(|e| e.to_string())?;
        Ok(weir_config::ModelShape {
            inputs: model.input_width(),
            outputs: model.output_widths().iter().sum(),
        })
    }
}

/// A model step.
pub struct ModelStep {
    step: String,
    model: Arc<OnnxModel>,
    features: Vec<usize>,
    output: SchemaRef,
    /// (model output index, value index within that output) per output column.
    outputs: Vec<(usize, usize)>,
    widths: Vec<usize>,
    matrix: Vec<f64>,
}

impl ModelStep {
    /// Checks the model against the step's declared inputs and outputs.
    pub fn new(
        step: &str,
        config: &Model,
        model: Arc<OnnxModel>,
        input: &SchemaRef,
        output: &SchemaRef,
    ) -> Result<Self, EngineError> {
        if model.input_width() != config.inputs.len() {
            return Err(EngineError::build(
                step,
                format!(
                    "model {} takes {} features per row, the step names {}",
                    config.path.display(),
                    model.input_width(),
                    config.inputs.len()
                ),
            ));
        }
        let widths = model.output_widths();
        let total: usize = widths.iter().sum();
        if total != config.outputs.len() {
            return Err(EngineError::build(
                step,
                format!(
                    "model {} produces {} values per row, the step names {} output columns",
                    config.path.display(),
                    total,
                    config.outputs.len()
                ),
            ));
        }
        let outputs = widths
            .iter()
            .enumerate()
            .flat_map(|(o, &w)| (0..w).map(move |k| (o, k)))
            .collect();
        let features = config
            .inputs
            .iter()
            .map(|n| input.index_of(n).map_err(|e| EngineError::build(step, e)))
            .collect::<Result<_, _>>()?;
        Ok(ModelStep {
            step: step.into(),
            model,
            features,
            output: output.clone(),
            outputs,
            widths,
            matrix: Vec::new(),
        })
    }
}

/// Copies a numeric column into column `j` of a row-major matrix; NULLs
/// become NaN.
fn scatter(array: &ArrayRef, j: usize, width: usize, matrix: &mut [f64]) -> bool {
    let any = array.as_any();
    macro_rules! put {
        ($t:ty) => {
            if let Some(a) = any.downcast_ref::<$t>() {
                for (r, v) in a.values().iter().enumerate() {
                    matrix[r * width + j] = *v as f64;
                }
                if let Some(n) = a.nulls() {
                    for r in n.iter().enumerate().filter(|(_, ok)| !ok).map(|(r, _)| r) {
                        matrix[r * width + j] = f64::NAN;
                    }
                }
                return true;
            }
        };
    }
    put!(Float64Array);
    put!(Int64Array);
    put!(Float32Array);
    put!(Int32Array);
    put!(UInt64Array);
    put!(UInt32Array);
    false
}

impl Operator for ModelStep {
    fn process(
        &mut self,
        batch: RecordBatch,
        ctx: &mut Ctx<'_>,
        out: &mut Outputs,
    ) -> Result<(), EngineError> {
        let rows = batch.num_rows();
        let width = self.features.len();
        self.matrix.clear();
        self.matrix.resize(rows * width, 0.0);
        for (j, &c) in self.features.iter().enumerate() {
            if !scatter(batch.column(c), j, width, &mut self.matrix) {
                return Err(EngineError::invariant(
                    format!("step {}", self.step),
                    "a feature column is not numeric (validation checks it is)",
                ));
            }
        }
        match self.model.run(rows, &self.matrix) {
            Ok(results) => {
                let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
                for &(o, k) in &self.outputs {
                    let w = self.widths[o];
                    let values: Vec<f64> = (0..rows).map(|r| results[o][r * w + k]).collect();
                    columns.push(Arc::new(Float64Array::from(values)));
                }
                let b = RecordBatch::try_new(self.output.clone(), columns)
                    .map_err(|e| EngineError::compute(&self.step, e))?;
                out.push((0, b));
            }
            Err(e) => {
                // The model could not score this batch: its records go to the
                // dead-letter destination rather than stopping the pipeline.
                let positions = batch
                    .column_by_name(weir_config::POSITION_COLUMN)
                    .and_then(|a| a.as_any().downcast_ref::<UInt64Array>().cloned());
                for r in 0..rows {
                    ctx.rejected.push(Rejected {
                        step: self.step.clone(),
                        position: positions.as_ref().map(|p| p.value(r)).unwrap_or(0),
                        reason: format!("model failed: {e}"),
                        bytes: Vec::new(),
                        record: Some(crate::encode::row_json(&batch, r)),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use weir_config::{ModelShape, ModelShapes};

    use super::OnnxShapes;

    #[test]
    fn shapes_of_model_files() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let model = repo.join("examples/fraud/model/fraud_lr.onnx");
        assert_eq!(
            OnnxShapes.shape(&model),
            Ok(ModelShape {
                inputs: 5,
                outputs: 1
            })
        );
        let not_a_model = repo.join("examples/fraud/model/model.toml");
        let why = OnnxShapes.shape(&not_a_model).expect_err("not ONNX");
        assert!(why.contains("model.toml"), "{why}");
    }
}
