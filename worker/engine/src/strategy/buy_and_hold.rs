//! `buy_and_hold`: enter on every bar, never exit. The first entry that can fill opens the
//! position; after a forced exit (the symbol left the index) it enters again when it can.

use super::{Builtin, ParamSet, Signals, Strategy, StrategyDef};
use crate::indicators::Indicators;

pub struct BuyAndHold;

impl Builtin for BuyAndHold {
    fn def(&self) -> &'static StrategyDef {
        &xt_shared::strategy::BUY_AND_HOLD
    }
}

impl Strategy for BuyAndHold {
    fn name(&self) -> &str {
        self.def().name
    }

    fn signals(
        &self,
        _: usize,
        _params: &ParamSet,
        _indicators: &mut Indicators<'_>,
        out: &mut Signals,
    ) {
        out.enter.fill(true);
    }
}
