//! `sma_cross`: long while the fast simple moving average is above the slow one.

use super::{ParamDef, ParamSet, Signals, Strategy, crosses};
use crate::engine::indicators::Indicators;

pub struct SmaCross;

const PARAMS: [ParamDef; 2] = [ParamDef::period("fast", 10), ParamDef::period("slow", 30)];

impl Strategy for SmaCross {
    fn name(&self) -> &'static str {
        "sma_cross"
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
        let fast = ind.sma(p.period("fast"));
        let slow = ind.sma(p.period("slow"));
        crosses(&fast, &slow, out);
    }
}
