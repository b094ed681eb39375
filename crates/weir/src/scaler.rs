//! `weir scaler`: the autoscaler (crate weir-scaler), given the engine's
//! series names so that it reads the names the engine registers.

use weir_engine::telemetry::names;
use weir_scaler::cli::{ScalerArgs, ScalerCommand};
use weir_scaler::observe::Series;

/// The series the scaler reads from each worker's `/metrics`.
pub const SERIES: Series = Series {
    source_records: names::SOURCE_RECORDS_TOTAL,
    consumer_lag: names::LOG_CONSUMER_LAG_RECORDS,
};

/// Runs `weir scaler` or `weir scaler simulate`.
pub fn run(args: ScalerArgs) -> anyhow::Result<()> {
    match args.command {
        Some(ScalerCommand::Simulate(sim)) => weir_scaler::cli::simulate(sim),
        None => weir_scaler::run::serve(args.serve, SERIES),
    }
}
