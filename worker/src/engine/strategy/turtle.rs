//! `turtle`: Donchian breakout. Enter when the close breaks the highest high of the previous
//! `entry` bars, exit when it breaks the lowest low of the previous `exit` bars or falls
//! `stop_atr` ATRs below the entry fill. Sized by risk: `cash * risk / ATR` shares, capped
//! by what the cash buys.

use super::{ParamDef, ParamSet, RiskRule, Signals, Strategy};
use crate::engine::indicators::Indicators;

pub struct Turtle;

const PARAMS: [ParamDef; 5] = [
    ParamDef::period("entry", 20),
    ParamDef::period("exit", 10),
    ParamDef::period("atr", 20),
    ParamDef::number("risk", 0.01),
    ParamDef::number("stop_atr", 2.0),
];

impl Strategy for Turtle {
    fn name(&self) -> &'static str {
        "turtle"
    }

    fn params(&self) -> &'static [ParamDef] {
        &PARAMS
    }

    fn rules(&self) -> &'static str {
        "0 < risk <= 1; stop_atr > 0"
    }

    fn check(&self, p: &ParamSet) -> Result<(), String> {
        let risk = p.get("risk");
        if !(0.0 < risk && risk <= 1.0) {
            return Err(format!("0 < risk <= 1 must hold, got risk {risk}"));
        }
        if p.get("stop_atr") <= 0.0 {
            return Err("stop_atr must be > 0".into());
        }
        Ok(())
    }

    fn signals(&self, p: &ParamSet, ind: &mut Indicators<'_>, out: &mut Signals) {
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
