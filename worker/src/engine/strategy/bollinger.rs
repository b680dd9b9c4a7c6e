//! `bollinger`: mean reversion; buy a close below the lower band, sell a close above the middle.

use super::{ParamDef, ParamSet, Signals, Strategy};
use crate::engine::indicators::Indicators;

pub struct Bollinger;

const PARAMS: [ParamDef; 2] = [ParamDef::period("period", 20), ParamDef::number("k", 2.0)];

impl Strategy for Bollinger {
    fn name(&self) -> &'static str {
        "bollinger"
    }

    fn params(&self) -> &'static [ParamDef] {
        &PARAMS
    }

    fn rules(&self) -> &'static str {
        "k > 0"
    }

    fn check(&self, p: &ParamSet) -> Result<(), String> {
        if p.get("k") <= 0.0 {
            return Err("k must be > 0".into());
        }
        Ok(())
    }

    fn signals(&self, p: &ParamSet, ind: &mut Indicators<'_>, out: &mut Signals) {
        let (_, middle, lower) = ind.bbands(p.period("period"), p.get("k"));
        let close = &ind.bars().close;
        for t in 0..close.len() {
            out.enter[t] = close[t] < lower[t];
            out.exit[t] = close[t] > middle[t];
        }
    }
}
