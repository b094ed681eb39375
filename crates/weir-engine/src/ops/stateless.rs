//! Stateless steps: filter, derive, select, route.

use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::SchemaRef;
use arrow_select::filter::filter_record_batch;
use weir_expr::CompiledExpr;

use super::{Ctx, Operator, Outputs};
use crate::EngineError;

fn expr_err(step: &str) -> impl Fn(weir_expr::ExprError) -> EngineError + '_ {
    move |source| EngineError::Expression {
        step: step.to_string(),
        source,
    }
}

fn arrow_err(step: &str) -> impl Fn(arrow_schema::ArrowError) -> EngineError + '_ {
    move |e| EngineError::compute(step, e)
}

/// Keeps the rows where `mask` is true, passing the batch through untouched
/// when all are.
pub fn keep(
    batch: RecordBatch,
    mask: &BooleanArray,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let kept = mask.true_count();
    if kept == batch.num_rows() {
        Ok(batch)
    } else if kept == 0 {
        Ok(batch.slice(0, 0))
    } else {
        filter_record_batch(&batch, mask)
    }
}

/// `filter`: keeps records whose predicate is true (NULL counts as false).
pub struct Filter {
    /// Step name.
    pub step: String,
    /// Predicate.
    pub predicate: CompiledExpr,
}

impl Operator for Filter {
    fn process(
        &mut self,
        batch: RecordBatch,
        _ctx: &mut Ctx<'_>,
        out: &mut Outputs,
    ) -> Result<(), EngineError> {
        let mask = self
            .predicate
            .evaluate_predicate(&batch)
            .map_err(expr_err(&self.step))?;
        let kept = keep(batch, &mask).map_err(arrow_err(&self.step))?;
        if kept.num_rows() > 0 {
            out.push((0, kept));
        }
        Ok(())
    }
}

/// `derive`: appends computed columns, each seeing the ones before it.
pub struct Derive {
    /// Step name.
    pub step: String,
    /// Expressions, in order.
    pub columns: Vec<CompiledExpr>,
    /// Schema after each added column (the last is the output schema).
    pub schemas: Vec<SchemaRef>,
}

impl Derive {
    /// Builds the step from its input schema and output schema.
    pub fn new(
        step: &str,
        columns: Vec<CompiledExpr>,
        input: &SchemaRef,
        output: &SchemaRef,
    ) -> Self {
        let base = input.fields().len();
        let schemas = (1..=columns.len())
            .map(|i| {
                Arc::new(arrow_schema::Schema::new(
                    output.fields()[..base + i].to_vec(),
                ))
            })
            .collect();
        Derive {
            step: step.to_string(),
            columns,
            schemas,
        }
    }
}

impl Operator for Derive {
    fn process(
        &mut self,
        batch: RecordBatch,
        _ctx: &mut Ctx<'_>,
        out: &mut Outputs,
    ) -> Result<(), EngineError> {
        let mut current = batch;
        for (expr, schema) in self.columns.iter().zip(&self.schemas) {
            let value = expr.evaluate(&current).map_err(expr_err(&self.step))?;
            let mut arrays: Vec<ArrayRef> = current.columns().to_vec();
            arrays.push(value);
            current =
                RecordBatch::try_new(schema.clone(), arrays).map_err(arrow_err(&self.step))?;
        }
        out.push((0, current));
        Ok(())
    }
}

/// `select`: keeps the named columns and the hidden ones.
pub struct Select {
    /// Step name.
    pub step: String,
    /// Indices of the kept columns in the input.
    pub indices: Vec<usize>,
}

impl Select {
    /// Resolves the output columns against the input schema.
    pub fn new(step: &str, input: &SchemaRef, output: &SchemaRef) -> Result<Self, EngineError> {
        let indices = output
            .fields()
            .iter()
            .map(|f| {
                input
                    .index_of(f.name())
                    .map_err(|e| EngineError::build(step, e))
            })
            .collect::<Result<_, _>>()?;
        Ok(Select {
            step: step.to_string(),
            indices,
        })
    }
}

impl Operator for Select {
    fn process(
        &mut self,
        batch: RecordBatch,
        _ctx: &mut Ctx<'_>,
        out: &mut Outputs,
    ) -> Result<(), EngineError> {
        out.push((
            0,
            batch
                .project(&self.indices)
                .map_err(arrow_err(&self.step))?,
        ));
        Ok(())
    }
}

/// `route`: sends each record to every route whose predicate holds.
pub struct Route {
    /// Step name.
    pub step: String,
    /// Predicate per route (port = index).
    pub routes: Vec<CompiledExpr>,
}

impl Operator for Route {
    fn process(
        &mut self,
        batch: RecordBatch,
        _ctx: &mut Ctx<'_>,
        out: &mut Outputs,
    ) -> Result<(), EngineError> {
        for (port, predicate) in self.routes.iter().enumerate() {
            let mask = predicate
                .evaluate_predicate(&batch)
                .map_err(expr_err(&self.step))?;
            let kept = keep(batch.clone(), &mask).map_err(arrow_err(&self.step))?;
            if kept.num_rows() > 0 {
                out.push((port, kept));
            }
        }
        Ok(())
    }
}
