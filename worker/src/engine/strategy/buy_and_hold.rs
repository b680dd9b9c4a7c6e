//! `buy_and_hold`: enter on every bar, never exit. The first entry that can fill opens the
//! position; after a forced exit (the symbol left the index) it enters again when it can.

use super::{ParamDef, ParamSet, Signals, Strategy};
use crate::engine::indicators::Indicators;

pub struct BuyAndHold;

impl Strategy for BuyAndHold {
    fn name(&self) -> &'static str {
        "buy_and_hold"
    }

    fn params(&self) -> &'static [ParamDef] {
        &[]
    }

    fn signals(&self, _params: &ParamSet, _indicators: &mut Indicators<'_>, out: &mut Signals) {
        out.enter.fill(true);
    }
}
