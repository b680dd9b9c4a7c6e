//! `bollinger`: mean reversion; buy a close below the lower band, sell a close above the middle.

use super::{Builtin, ParamSet, Signals, Strategy, StrategyDef};
use crate::indicators::Indicators;

pub struct Bollinger;

impl Builtin for Bollinger {
    fn def(&self) -> &'static StrategyDef {
        &xt_shared::strategy::BOLLINGER
    }
}

impl Strategy for Bollinger {
    fn name(&self) -> &str {
        self.def().name
    }

    fn signals(&self, _: usize, p: &ParamSet, ind: &mut Indicators<'_>, out: &mut Signals) {
        let (_, middle, lower) = ind.bbands(p.period("period"), p.get("k"));
        let close = &ind.bars().close;
        for t in 0..close.len() {
            out.enter[t] = close[t] < lower[t];
            out.exit[t] = close[t] > middle[t];
        }
    }
}
