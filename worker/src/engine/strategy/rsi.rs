//! `rsi`: buy when Wilder's RSI is oversold (below `lower`), sell when overbought (above `upper`).

use super::{ParamDef, ParamSet, Signals, Strategy};
use crate::engine::indicators::Indicators;

pub struct Rsi;

const PARAMS: [ParamDef; 3] = [
    ParamDef::period("period", 14),
    ParamDef::number("lower", 30.0),
    ParamDef::number("upper", 70.0),
];

impl Strategy for Rsi {
    fn name(&self) -> &'static str {
        "rsi"
    }

    fn params(&self) -> &'static [ParamDef] {
        &PARAMS
    }

    fn rules(&self) -> &'static str {
        "0 < lower < upper < 100"
    }

    fn check(&self, p: &ParamSet) -> Result<(), String> {
        let (lower, upper) = (p.get("lower"), p.get("upper"));
        if !(0.0 < lower && lower < upper && upper < 100.0) {
            return Err(format!(
                "0 < lower < upper < 100 must hold, got lower {lower}, upper {upper}"
            ));
        }
        Ok(())
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
