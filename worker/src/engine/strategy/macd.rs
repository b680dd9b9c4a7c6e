//! `macd`: long while TA-Lib's MACD line is above its signal line.

use super::{ParamDef, ParamSet, Signals, Strategy, crosses};
use crate::engine::indicators::Indicators;

pub struct Macd;

const PARAMS: [ParamDef; 3] = [
    ParamDef::period("fast", 12),
    ParamDef::period("slow", 26),
    ParamDef::period("signal", 9),
];

impl Strategy for Macd {
    fn name(&self) -> &'static str {
        "macd"
    }

    fn params(&self) -> &'static [ParamDef] {
        &PARAMS
    }

    fn rules(&self) -> &'static str {
        "fast < slow"
    }

    fn check(&self, p: &ParamSet) -> Result<(), String> {
        if p.get("fast") >= p.get("slow") {
            return Err("fast must be < slow".into());
        }
        Ok(())
    }

    fn signals(&self, p: &ParamSet, ind: &mut Indicators<'_>, out: &mut Signals) {
        let (line, signal) = ind.macd(p.period("fast"), p.period("slow"), p.period("signal"));
        crosses(&line, &signal, out);
    }
}
