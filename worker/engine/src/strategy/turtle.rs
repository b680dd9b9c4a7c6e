//! `turtle`: Donchian breakout. Enter when the close breaks the highest high of the previous
//! `entry` bars, exit when it breaks the lowest low of the previous `exit` bars or falls
//! `stop_atr` ATRs below the entry fill. Sized by risk: `cash * risk / ATR` shares, capped
//! by what the cash buys.

use super::{Builtin, ParamSet, RiskRule, Signals, Strategy, StrategyDef};
use crate::indicators::Indicators;

pub struct Turtle;

impl Builtin for Turtle {
    fn def(&self) -> &'static StrategyDef {
        &xt_shared::strategy::TURTLE
    }
}

impl Strategy for Turtle {
    fn name(&self) -> &str {
        self.def().name
    }

    fn signals(&self, _: usize, p: &ParamSet, ind: &mut Indicators<'_>, out: &mut Signals) {
        let upper = ind.max_high(p.period("entry"));
        let lower = ind.min_low(p.period("exit"));
        let atr = ind.atr(p.period("atr"));
        let close = &ind.bars().close;
        for t in 1..close.len() {
            // The size reads ATR[t]; without it the entry rule is undefined, hence false.
            out.enter[t] = close[t] > upper[t - 1] && !atr[t].is_nan();
            out.exit[t] = close[t] < lower[t - 1];
        }
        out.risk = Some(RiskRule {
            atr,
            risk: p.get("risk"),
            stop_atr: p.get("stop_atr"),
        });
    }
}
