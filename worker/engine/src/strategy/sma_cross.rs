//! `sma_cross`: long while the fast simple moving average is above the slow one.

use super::{Builtin, ParamSet, Signals, Strategy, StrategyDef, crosses};
use crate::indicators::Indicators;

pub struct SmaCross;

impl Builtin for SmaCross {
    fn def(&self) -> &'static StrategyDef {
        &xt_shared::strategy::SMA_CROSS
    }
}

impl Strategy for SmaCross {
    fn name(&self) -> &str {
        self.def().name
    }

    fn signals(&self, _: usize, p: &ParamSet, ind: &mut Indicators<'_>, out: &mut Signals) {
        let fast = ind.sma(p.period("fast"));
        let slow = ind.sma(p.period("slow"));
        crosses(&fast, &slow, out);
    }
}
