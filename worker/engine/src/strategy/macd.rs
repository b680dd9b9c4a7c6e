//! `macd`: long while TA-Lib's MACD line is above its signal line.

use super::{Builtin, ParamSet, Signals, Strategy, StrategyDef, crosses};
use crate::indicators::Indicators;

pub struct Macd;

impl Builtin for Macd {
    fn def(&self) -> &'static StrategyDef {
        &xt_shared::strategy::MACD
    }
}

impl Strategy for Macd {
    fn name(&self) -> &str {
        self.def().name
    }

    fn signals(&self, _: usize, p: &ParamSet, ind: &mut Indicators<'_>, out: &mut Signals) {
        let (line, signal) = ind.macd(p.period("fast"), p.period("slow"), p.period("signal"));
        crosses(&line, &signal, out);
    }
}
