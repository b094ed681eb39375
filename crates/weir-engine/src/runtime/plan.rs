//! What a run is made of before any thread starts: how many shards and
//! workers, the resolved step graph, the loaded models, and the operators
//! each kind of thread runs.
//!
//! Every operator is built once here, up front, so that a configuration
//! the engine cannot build is reported before anything opens or starts.

use std::collections::HashMap;
use std::sync::Arc;

use weir_config::{Pipeline, StepKind, WindowKind};

use crate::ops::keyed::Partitioner;
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
        let graph = Arc::new(resolve_graph(p)?);
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
                return Ok(Op::Split(Partitioner::new(
                    &s.name,
                    idx,
                    p.settings.key_groups,
                    self.shards,
                )));
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

/// Where records leaving a step's output port go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Consumer {
    Step(usize),
    Sink(usize),
}

/// The pipeline's steps as a resolved tree.
pub(crate) struct Graph {
    /// Per step, per output port, its consumers.
    pub children: Vec<Vec<Vec<Consumer>>>,
    pub decode: usize,
    /// Steps that workers run, in pipeline order (decode first).
    pub unkeyed: Vec<usize>,
    /// Steps that shards run (after a key_by), in pipeline order.
    pub keyed: Vec<usize>,
}

fn resolve_graph(p: &Pipeline) -> Result<Graph, EngineError> {
    let index: HashMap<&str, usize> = p
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let ports = |s: &weir_config::Step| match &s.kind {
        StepKind::Route { routes } => routes.len(),
        _ => 1,
    };
    let mut children: Vec<Vec<Vec<Consumer>>> =
        p.steps.iter().map(|s| vec![Vec::new(); ports(s)]).collect();
    let port_of =
        |who: &str, parent: usize, output: &Option<String>| match (&p.steps[parent].kind, output) {
            (StepKind::Route { routes }, Some(o)) => {
                routes.iter().position(|(n, _)| n == o).ok_or_else(|| {
                    EngineError::build(who, "input names a route its step does not have")
                })
            }
            _ => Ok(0),
        };
    let mut decode = None;
    for (i, s) in p.steps.iter().enumerate() {
        match index.get(s.input.node.as_str()) {
            Some(&parent) => {
                let port = port_of(&s.name, parent, &s.input.output)?;
                children[parent][port].push(Consumer::Step(i));
            }
            None => decode = Some(i),
        }
    }
    for (i, s) in p.sinks.iter().enumerate() {
        let parent = *index
            .get(s.input.node.as_str())
            .ok_or_else(|| EngineError::build(&s.name, "input is not a step"))?;
        let port = port_of(&s.name, parent, &s.input.output)?;
        children[parent][port].push(Consumer::Sink(i));
    }
    let decode =
        decode.ok_or_else(|| EngineError::build(&p.name, "no decode step reads the source"))?;
    let is_split = |s: &weir_config::Step| matches!(s.kind, StepKind::KeyBy { .. });
    let (keyed, unkeyed): (Vec<usize>, Vec<usize>) =
        (0..p.steps.len()).partition(|&i| p.steps[i].keyed && !is_split(&p.steps[i]));
    Ok(Graph {
        children,
        decode,
        unkeyed,
        keyed,
    })
}
