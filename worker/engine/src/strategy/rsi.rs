//! `rsi`: buy when Wilder's RSI is oversold (below `lower`), sell when overbought (above `upper`).

use super::{Builtin, ParamSet, Signals, Strategy, StrategyDef};
use crate::indicators::Indicators;

pub struct Rsi;

impl Builtin for Rsi {
    fn def(&self) -> &'static StrategyDef {
        &xt_shared::strategy::RSI
    }
}

impl Strategy for Rsi {
    fn name(&self) -> &str {
        self.def().name
    }

    fn signals(&self, _: usize, p: &ParamSet, ind: &mut Indicators<'_>, out: &mut Signals) {
        let rsi = ind.rsi(p.period("period"));
        let (lower, upper) = (p.get("lower"), p.get("upper"));
        for t in 0..rsi.len() {
            out.enter[t] = rsi[t] < lower;
            out.exit[t] = rsi[t] > upper;
        }
    }
}
