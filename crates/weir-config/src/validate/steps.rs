//! Steps after the decode: filter, derive, select, key_by, model and route.
//! Each is checked against exactly the columns that reach it and yields its
//! output schema.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::schema::{compile_at, visible, with_fields, PortInfo};
use super::tables::StepSpec;
use super::window::check_window;
use crate::check::{resolve, Checker};
use crate::connectors::Context;
use crate::spec::*;
use crate::{Model, ModelShapes, StepKind};

/// What a checked step is, its output schema and what flows out of it.
pub(super) type Checked = (StepKind, SchemaRef, PortInfo);

/// Where a step's problems are reported.
struct Here<'p, 's> {
    path: &'p str,
    span: &'s Range<usize>,
}

/// Checks a step (not a decode) reading `up`.
pub(super) fn check_step(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    spec: &StepSpec,
    up: &PortInfo,
    context: &Context<'_>,
) -> Option<Checked> {
    let at = Here { path, span };
    match spec {
        StepSpec::Decode(_) => None,
        StepSpec::Filter(s) => check_filter(c, &at, s, up),
        StepSpec::Derive(s) => check_derive(c, &at, s, up),
        StepSpec::Select(s) => check_select(c, &at, s, up),
        StepSpec::KeyBy(s) => check_key_by(c, &at, s, up),
        StepSpec::Window(s) => check_window(c, path, span, s, up),
        StepSpec::Model(s) => check_model(c, &at, s, up, context),
        StepSpec::Route(s) => check_route(c, &at, s, up),
    }
}

fn check_filter(c: &mut Checker<'_>, at: &Here, s: &FilterSpec, up: &PortInfo) -> Option<Checked> {
    let schema = up.schema.clone();
    let predicate = compile_at(
        c,
        format!("{}.where", at.path),
        at.span,
        "where",
        &s.predicate,
        &schema,
        true,
    )?;
    Some((
        StepKind::Filter { predicate },
        schema.clone(),
        up.with_schema(schema),
    ))
}

/// New columns, each compiled against the columns before it.
fn check_derive(c: &mut Checker<'_>, at: &Here, s: &DeriveSpec, up: &PortInfo) -> Option<Checked> {
    let mut current = up.schema.as_ref().clone();
    let mut columns = Vec::new();
    let mut ok = true;
    for (name, value) in &s.columns {
        let field = format!("{}.columns.{name}", at.path);
        let Some(src) = value.as_str() else {
            c.at(field, at.span, name, "expected an expression string");
            ok = false;
            continue;
        };
        if current.field_with_name(name).is_ok() || crate::is_hidden(name) {
            c.at(
                field,
                at.span,
                name,
                format!("column {name:?} already exists or is reserved"),
            );
            ok = false;
            continue;
        }
        match compile_at(c, field, at.span, name, src, &current, false) {
            Some(e) => {
                current = with_fields(
                    &current,
                    vec![Field::new(name, e.data_type().clone(), true)],
                )
                .as_ref()
                .clone();
                columns.push((name.clone(), e));
            }
            None => ok = false,
        }
    }
    if !ok {
        return None;
    }
    let out = Arc::new(current);
    Some((
        StepKind::Derive { columns },
        out.clone(),
        up.with_schema(out),
    ))
}

/// Visible columns kept, in order; the hidden ones always stay, the key
/// must. The event time is known after it only when kept.
fn check_select(c: &mut Checker<'_>, at: &Here, s: &SelectSpec, up: &PortInfo) -> Option<Checked> {
    let schema = &up.schema;
    let mut fields = Vec::new();
    let mut ok = true;
    for (i, name) in s.columns.iter().enumerate() {
        match schema.field_with_name(name) {
            Ok(f) if !crate::is_hidden(name) => fields.push(f.clone()),
            _ => {
                c.at(
                    format!("{}.columns[{i}]", at.path),
                    at.span,
                    "columns",
                    format!("unknown column {name:?} (available: {})", visible(schema)),
                );
                ok = false;
            }
        }
    }
    if let Some(k) = &up.key {
        if !s.columns.contains(k) {
            c.at(
                format!("{}.columns", at.path),
                at.span,
                "columns",
                format!("the key column {k:?} must be kept after key_by"),
            );
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    for f in schema
        .fields()
        .iter()
        .filter(|f| crate::is_hidden(f.name()))
    {
        fields.push(f.as_ref().clone());
    }
    let out = Arc::new(Schema::new(fields));
    let mut info = up.with_schema(out.clone());
    if let Some((t, _)) = &up.event_time {
        if !s.columns.contains(t) {
            info.event_time = None;
        }
    }
    Some((
        StepKind::Select {
            columns: s.columns.clone(),
        },
        out,
        info,
    ))
}

/// One key_by per path, on an integer, string or boolean column.
fn check_key_by(c: &mut Checker<'_>, at: &Here, s: &KeyBySpec, up: &PortInfo) -> Option<Checked> {
    let schema = up.schema.clone();
    if let Some(k) = &up.key {
        c.at(
            format!("{}.input", at.path),
            at.span,
            "input",
            format!("records are already keyed by {k:?}; one key_by per path"),
        );
        return None;
    }
    let problem = match schema.field_with_name(&s.key) {
        Ok(f)
            if matches!(
                f.data_type(),
                DataType::Int32
                    | DataType::Int64
                    | DataType::UInt32
                    | DataType::UInt64
                    | DataType::Utf8
                    | DataType::Boolean
            ) =>
        {
            None
        }
        Ok(f) => Some(format!(
            "key column {:?} is {}; keys must be integer, string or boolean",
            s.key,
            f.data_type()
        )),
        Err(_) => Some(format!(
            "unknown column {:?} (available: {})",
            s.key,
            visible(&schema)
        )),
    };
    if let Some(message) = problem {
        c.at(format!("{}.key", at.path), at.span, "key", message);
        return None;
    }
    let info = PortInfo {
        schema: schema.clone(),
        key: Some(s.key.clone()),
        event_time: up.event_time.clone(),
    };
    Some((StepKind::KeyBy { key: s.key.clone() }, schema, info))
}

/// Numeric features in, new DOUBLE columns out, and a model file that
/// exists; with [`crate::Checks::models`], as many inputs and outputs as
/// the model has.
fn check_model(
    c: &mut Checker<'_>,
    at: &Here,
    s: &ModelSpec,
    up: &PortInfo,
    context: &Context<'_>,
) -> Option<Checked> {
    let schema = &up.schema;
    let path = at.path;
    let mut ok = true;
    for (i, name) in s.inputs.iter().enumerate() {
        let problem = match schema.field_with_name(name) {
            Ok(f) if f.data_type().is_numeric() => continue,
            Ok(f) => format!(
                "feature {name:?} is {}, features must be numeric",
                f.data_type()
            ),
            Err(_) => format!("unknown column {name:?} (available: {})", visible(schema)),
        };
        c.at(format!("{path}.inputs[{i}]"), at.span, "inputs", problem);
        ok = false;
    }
    if s.inputs.is_empty() || s.outputs.is_empty() {
        c.at(
            format!("{path}.inputs"),
            at.span,
            "inputs",
            "a model step needs at least one input and one output column",
        );
        ok = false;
    }
    let mut extra = Vec::new();
    for (i, name) in s.outputs.iter().enumerate() {
        if schema.field_with_name(name).is_ok() || crate::is_hidden(name) {
            c.at(
                format!("{path}.outputs[{i}]"),
                at.span,
                "outputs",
                format!("output column {name:?} already exists or is reserved"),
            );
            ok = false;
        }
        extra.push(Field::new(name, DataType::Float64, true));
    }
    let model_path = resolve(context.base_dir, &s.path);
    if !model_path.is_file() {
        c.at(
            format!("{path}.path"),
            at.span,
            "path",
            format!("model file {} does not exist", model_path.display()),
        );
        ok = false;
    } else if let Some(models) = context.checks.models {
        ok &= check_model_shape(c, at, s, &model_path, models);
    }
    if !ok {
        return None;
    }
    let out = with_fields(schema, extra);
    Some((
        StepKind::Model(Model {
            path: model_path,
            inputs: s.inputs.clone(),
            outputs: s.outputs.clone(),
        }),
        out.clone(),
        up.with_schema(out),
    ))
}

/// The step names as many inputs and outputs as the model at `file` has.
fn check_model_shape(
    c: &mut Checker<'_>,
    at: &Here,
    s: &ModelSpec,
    file: &Path,
    models: &dyn ModelShapes,
) -> bool {
    let path = at.path;
    let shape = match models.shape(file) {
        Ok(shape) => shape,
        Err(why) => {
            c.at(format!("{path}.path"), at.span, "path", why);
            return false;
        }
    };
    let mut ok = true;
    if shape.inputs != s.inputs.len() {
        c.at(
            format!("{path}.inputs"),
            at.span,
            "inputs",
            format!(
                "model {} takes {} features per row, the step names {}",
                file.display(),
                shape.inputs,
                s.inputs.len()
            ),
        );
        ok = false;
    }
    if shape.outputs != s.outputs.len() {
        c.at(
            format!("{path}.outputs"),
            at.span,
            "outputs",
            format!(
                "model {} produces {} values per row, the step names {} output columns",
                file.display(),
                shape.outputs,
                s.outputs.len()
            ),
        );
        ok = false;
    }
    ok
}

/// One predicate per route, in the file's order; all routes share the
/// input's schema.
fn check_route(c: &mut Checker<'_>, at: &Here, s: &RouteSpec, up: &PortInfo) -> Option<Checked> {
    let schema = up.schema.clone();
    let mut routes = Vec::new();
    let mut ok = true;
    for (name, value) in &s.routes {
        let field = format!("{}.routes.{name}", at.path);
        let Some(src) = value.as_str() else {
            c.at(field, at.span, name, "expected a predicate string");
            ok = false;
            continue;
        };
        match compile_at(c, field, at.span, name, src, &schema, true) {
            Some(e) => routes.push((name.clone(), e)),
            None => ok = false,
        }
    }
    if routes.is_empty() && ok {
        c.at(
            format!("{}.routes", at.path),
            at.span,
            "routes",
            "declare at least one route",
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    Some((
        StepKind::Route { routes },
        schema.clone(),
        up.with_schema(schema),
    ))
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    /// A `[[steps]]` table with these lines.
    fn step(lines: &str) -> String {
        format!("\n[[steps]]\n{lines}\n")
    }

    /// The base pipeline with one more step `s` (whose table has these lines
    /// after its name) read by the sink.
    fn one_step(lines: &str) -> String {
        pipeline(&step(&format!("name = \"s\"\n{lines}")), "s")
    }

    /// The base pipeline with a key_by on `card`, then step `s` (these lines
    /// after its name) reading it, read by the sink.
    fn after_key_by(lines: &str) -> String {
        let steps = step("name = \"k\"\ntype = \"key_by\"\ninput = \"decode\"\nkey = \"card\"")
            + &step(&format!("name = \"s\"\n{lines}"));
        pipeline(&steps, "s")
    }

    #[test]
    fn filter_problems() {
        check(&[
            case(
                "unknown column",
                one_step("type = \"filter\"\ninput = \"decode\"\nwhere = \"amout > 0\""),
                "steps[1].where",
                Some("where ="),
                "unknown column \"amout\" (available: id, card, amount, ts); did you mean \"amount\"? in \"amout > 0\"",
            ),
            case(
                "predicate that is not boolean",
                one_step("type = \"filter\"\ninput = \"decode\"\nwhere = \"amount * 2\""),
                "steps[1].where",
                Some("where ="),
                "expected BOOLEAN predicate, found DOUBLE in \"amount * 2\"",
            ),
        ]);
    }

    #[test]
    fn derive_problems() {
        check(&[
            case(
                "value that is not a string",
                one_step("type = \"derive\"\ninput = \"decode\"\ncolumns = { double = 2 }"),
                "steps[1].columns.double",
                Some("columns ="),
                "expected an expression string",
            ),
            case(
                "existing column",
                one_step(
                    "type = \"derive\"\ninput = \"decode\"\ncolumns = { amount = \"amount * 2\" }",
                ),
                "steps[1].columns.amount",
                Some("columns ="),
                "column \"amount\" already exists or is reserved",
            ),
            case(
                "reserved column",
                one_step(
                    "type = \"derive\"\ninput = \"decode\"\ncolumns = { __double = \"amount * 2\" }",
                ),
                "steps[1].columns.__double",
                Some("columns ="),
                "column \"__double\" already exists or is reserved",
            ),
            case(
                "expression that does not type-check",
                one_step("type = \"derive\"\ninput = \"decode\"\ncolumns = { bad = \"card + 1\" }"),
                "steps[1].columns.bad",
                Some("columns ="),
                "cannot apply operator + to VARCHAR and BIGINT in \"card + 1\"",
            ),
        ]);
    }

    #[test]
    fn select_problems() {
        check(&[
            case(
                "unknown column",
                one_step("type = \"select\"\ninput = \"decode\"\ncolumns = [\"id\", \"nope\"]"),
                "steps[1].columns[1]",
                Some("columns ="),
                "unknown column \"nope\" (available: id, card, amount, ts)",
            ),
            case(
                "hidden column",
                one_step("type = \"select\"\ninput = \"decode\"\ncolumns = [\"__pos\"]"),
                "steps[1].columns[0]",
                Some("columns ="),
                "unknown column \"__pos\" (available: id, card, amount, ts)",
            ),
            case(
                "key column dropped",
                after_key_by("type = \"select\"\ninput = \"k\"\ncolumns = [\"id\"]"),
                "steps[2].columns",
                Some("columns ="),
                "the key column \"card\" must be kept after key_by",
            ),
        ]);
    }

    #[test]
    fn key_by_problems() {
        check(&[
            case(
                "second key_by on a path",
                after_key_by("type = \"key_by\"\ninput = \"k\"\nkey = \"id\""),
                "steps[2].input",
                Some("input = \"k\""),
                "records are already keyed by \"card\"; one key_by per path",
            ),
            case(
                "key that is a float",
                one_step("type = \"key_by\"\ninput = \"decode\"\nkey = \"amount\""),
                "steps[1].key",
                Some("key ="),
                "key column \"amount\" is Float64; keys must be integer, string or boolean",
            ),
            case(
                "unknown key",
                one_step("type = \"key_by\"\ninput = \"decode\"\nkey = \"cards\""),
                "steps[1].key",
                Some("key ="),
                "unknown column \"cards\" (available: id, card, amount, ts)",
            ),
        ]);
    }

    #[test]
    fn model_problems() {
        let model = |lines: &str| {
            one_step(&format!(
                "type = \"model\"\ninput = \"decode\"\npath = \"Cargo.toml\"\n{lines}"
            ))
        };
        check(&[
            case(
                "feature that is a string",
                model("inputs = [\"card\"]\noutputs = [\"score\"]"),
                "steps[1].inputs[0]",
                Some("inputs ="),
                "feature \"card\" is Utf8, features must be numeric",
            ),
            case(
                "unknown feature",
                model("inputs = [\"amount\", \"nope\"]\noutputs = [\"score\"]"),
                "steps[1].inputs[1]",
                Some("inputs ="),
                "unknown column \"nope\" (available: id, card, amount, ts)",
            ),
            case(
                "no outputs",
                model("inputs = [\"amount\"]\noutputs = []"),
                "steps[1].inputs",
                Some("inputs ="),
                "a model step needs at least one input and one output column",
            ),
            case(
                "output that exists",
                model("inputs = [\"amount\"]\noutputs = [\"amount\"]"),
                "steps[1].outputs[0]",
                Some("outputs ="),
                "output column \"amount\" already exists or is reserved",
            ),
            case(
                "missing model file",
                one_step("type = \"model\"\ninput = \"decode\"\npath = \"/nonexistent/m.onnx\"\ninputs = [\"amount\"]\noutputs = [\"score\"]"),
                "steps[1].path",
                Some("path ="),
                "model file /nonexistent/m.onnx does not exist",
            ),
        ]);
    }

    /// Models whose file (any file: `Cargo.toml` stands in) has this shape;
    /// `src/lib.rs` cannot be read as one.
    struct Shaped(crate::ModelShape);

    impl crate::ModelShapes for Shaped {
        fn shape(&self, path: &std::path::Path) -> Result<crate::ModelShape, String> {
            if path.ends_with("src/lib.rs") {
                return Err(format!("model {}: not an ONNX model", path.display()));
            }
            Ok(self.0)
        }
    }

    /// With a model reader (`weir validate`): the step names as many inputs
    /// and outputs as the model has.
    #[test]
    fn model_shape_problems() {
        let base = env!("CARGO_MANIFEST_DIR");
        let model = |lines: &str| {
            one_step(&format!(
                "type = \"model\"\ninput = \"decode\"\npath = \"Cargo.toml\"\n{lines}"
            ))
        };
        let inputs = format!("model {base}/Cargo.toml takes 2 features per row, the step names 1");
        let outputs = format!(
            "model {base}/Cargo.toml produces 1 values per row, the step names 2 output columns"
        );
        let unreadable = format!("model {base}/src/lib.rs: not an ONNX model");
        let models = Shaped(crate::ModelShape {
            inputs: 2,
            outputs: 1,
        });
        check_in(
            &[
                case(
                    "too few inputs",
                    model("inputs = [\"amount\"]\noutputs = [\"score\"]"),
                    "steps[1].inputs",
                    Some("inputs ="),
                    &inputs,
                ),
                case(
                    "too many outputs",
                    model("inputs = [\"amount\", \"id\"]\noutputs = [\"score\", \"other\"]"),
                    "steps[1].outputs",
                    Some("outputs ="),
                    &outputs,
                ),
                case(
                    "model that cannot be read",
                    one_step("type = \"model\"\ninput = \"decode\"\npath = \"src/lib.rs\"\ninputs = [\"amount\", \"id\"]\noutputs = [\"score\"]"),
                    "steps[1].path",
                    Some("path ="),
                    &unreadable,
                ),
            ],
            &crate::Checks::all(&models),
            &[],
        );
        let fits = model("inputs = [\"amount\", \"id\"]\noutputs = [\"score\"]");
        assert!(parse_in(&fits, &crate::Checks::all(&models), &[]).is_ok());
        // Without a model reader, the counts are not checked.
        assert!(parse(&model("inputs = [\"amount\"]\noutputs = [\"score\"]")).is_ok());
    }

    #[test]
    fn route_problems() {
        check(&[
            case(
                "predicate that is not a string",
                pipeline(&step("name = \"r\"\ntype = \"route\"\ninput = \"decode\"\nroutes = { big = true }"), "r.big"),
                "steps[1].routes.big",
                Some("routes ="),
                "expected a predicate string",
            ),
            case(
                "predicate that does not type-check",
                pipeline(&step("name = \"r\"\ntype = \"route\"\ninput = \"decode\"\nroutes = { big = \"amount\" }"), "r.big"),
                "steps[1].routes.big",
                Some("routes ="),
                "expected BOOLEAN predicate, found DOUBLE in \"amount\"",
            ),
            case(
                "no routes",
                pipeline(&step("name = \"r\"\ntype = \"route\"\ninput = \"decode\"\nroutes = {}"), "r"),
                "steps[1].routes",
                Some("routes ="),
                "declare at least one route",
            ),
        ]);
    }
}
