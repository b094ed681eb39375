//! What a run is made of before any thread starts: how many shards and
//! workers, the resolved step graph, the loaded models, and the operators
//! each kind of thread runs.
//!
//! Every operator is built once here, up front, so that a configuration
//! the engine cannot build is reported before anything opens or starts.

use std::collections::HashMap;
use std::sync::Arc;

use weir_config::{Pipeline, StepKind, WindowKind};

pub(crate) use weir_config::{Consumer, Graph};

use crate::ops::keyed::{OwnedGroups, Partitioner};
use crate::ops::model::ModelStep;
use crate::ops::stateless::{Derive, Filter, Route, Select};
use crate::ops::window::{FixedWindows, SlidingWindow};
use crate::ops::Operator;
use crate::EngineError;

/// Models by step name, loaded once and shared by every thread.
pub(crate) type Models = HashMap<String, Arc<weir_model::OnnxModel>>;

/// The shape of a run.
pub(crate) struct Plan {
    /// Shards (threads owning key groups); also the number of workers.
    pub shards: usize,
    pub workers: usize,
    /// Whether the pipeline has keyed steps (and so shard threads).
    pub keyed: bool,
    pub graph: Arc<Graph>,
    pub models: Arc<Models>,
}

impl Plan {
    /// Sizes the run (`shards` overrides the pipeline's setting; 0 or none:
    /// as configured, where 0 means one per core), loads the models and
    /// builds every operator once.
    pub fn new(p: &Pipeline, shards: Option<usize>) -> Result<Plan, EngineError> {
        let configured = shards.filter(|&s| s > 0).unwrap_or(p.settings.shards);
        let shards = if configured == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            configured
        };
        let shards = shards.clamp(1, p.settings.key_groups as usize);
        let graph = Arc::new(p.graph.clone());
        let mut models = HashMap::new();
        for s in &p.steps {
            if let StepKind::Model(m) = &s.kind {
                let model = weir_model::OnnxModel::load(&m.path)
                    .map_err(|e| EngineError::build(&s.name, e))?;
                models.insert(s.name.clone(), Arc::new(model));
            }
        }
        let plan = Plan {
            shards,
            workers: shards,
            keyed: !graph.keyed.is_empty(),
            graph,
            models: Arc::new(models),
        };
        plan.build_ops(p, &plan.graph.unkeyed)?;
        plan.build_ops(p, &plan.graph.keyed)?;
        Ok(plan)
    }

    /// Builds the operators of steps `which` (the rest are [`Op::Absent`]).
    pub fn build_ops(&self, p: &Pipeline, which: &[usize]) -> Result<Vec<Op>, EngineError> {
        let mut ops: Vec<Op> = p.steps.iter().map(|_| Op::Absent).collect();
        for &i in which {
            ops[i] = self.build_op(p, i)?;
        }
        Ok(ops)
    }

    fn build_op(&self, p: &Pipeline, i: usize) -> Result<Op, EngineError> {
        let s = &p.steps[i];
        let (input, output) = (&s.input_schema, &s.output_schema);
        let op: Box<dyn Operator> = match &s.kind {
            StepKind::Decode(_) => return Ok(Op::Decode),
            StepKind::KeyBy { key } => {
                let idx = input
                    .index_of(key)
                    .map_err(|e| EngineError::build(&s.name, e))?;
                let split = Partitioner::new(&s.name, idx, p.settings.key_groups, self.shards);
                return Ok(Op::Split(match &p.task {
                    Some(t) => split.owning(OwnedGroups {
                        task: t.index,
                        tasks: t.count,
                        groups: t.key_groups,
                    }),
                    None => split,
                }));
            }
            StepKind::Filter { predicate } => Box::new(Filter {
                step: s.name.clone(),
                predicate: predicate.clone(),
            }),
            StepKind::Derive { columns } => Box::new(Derive::new(
                &s.name,
                columns.iter().map(|(_, e)| e.clone()).collect(),
                input,
                output,
            )),
            StepKind::Select { .. } => Box::new(Select::new(&s.name, input, output)?),
            StepKind::Route { routes } => Box::new(Route {
                step: s.name.clone(),
                routes: routes.iter().map(|(_, e)| e.clone()).collect(),
            }),
            StepKind::Window(w) => match w.kind {
                WindowKind::Sliding => Box::new(SlidingWindow::new(&s.name, w, input, output)?),
                _ => Box::new(FixedWindows::new(&s.name, w, input, output)?),
            },
            StepKind::Model(m) => {
                let model = self
                    .models
                    .get(&s.name)
                    .cloned()
                    .ok_or_else(|| EngineError::invariant(&s.name, "model not loaded"))?;
                Box::new(ModelStep::new(&s.name, m, model, input, output)?)
            }
        };
        Ok(Op::Run(op))
    }
}

/// A step as one thread runs it.
pub(crate) enum Op {
    Decode,
    Split(Partitioner),
    Run(Box<dyn Operator>),
    /// Not run on this kind of thread.
    Absent,
}
