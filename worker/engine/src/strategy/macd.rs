//! `macd`: long while TA-Lib's MACD line is above its signal line.

use super::{ParamSet, Signals, Strategy, StrategyDef, crosses};
use crate::indicators::Indicators;

pub struct Macd;

impl Strategy for Macd {
    fn def(&self) -> &'static StrategyDef {
        &xt_shared::strategy::MACD
    }

    fn signals(&self, p: &ParamSet, ind: &mut Indicators<'_>, out: &mut Signals) {
        let (line, signal) = ind.macd(p.period("fast"), p.period("slow"), p.period("signal"));
        crosses(&line, &signal, out);
    }
}
