//! `rsi`: buy when Wilder's RSI is oversold (below `lower`), sell when overbought (above `upper`).

use super::{ParamSet, Signals, Strategy, StrategyDef};
use crate::indicators::Indicators;

pub struct Rsi;

impl Strategy for Rsi {
    fn def(&self) -> &'static StrategyDef {
        &xt_shared::strategy::RSI
    }

    fn signals(&self, p: &ParamSet, ind: &mut Indicators<'_>, out: &mut Signals) {
        let rsi = ind.rsi(p.period("period"));
        let (lower, upper) = (p.get("lower"), p.get("upper"));
        for t in 0..rsi.len() {
            out.enter[t] = rsi[t] < lower;
            out.exit[t] = rsi[t] > upper;
        }
    }
}
