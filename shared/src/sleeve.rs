//! What one sleeve did: its bar-by-bar cash, position and equity, and its round trips. The
//! engine fills it; the result tables are written from it.

/// A round trip, or an open position at the end (`exit` is `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Trade {
    /// Bar index of the entry fill.
    pub entry: usize,
    pub entry_price: f64,
    pub exit: Option<usize>,
    pub exit_price: Option<f64>,
    pub qty: f64,
    /// Commission paid at entry.
    pub entry_costs: f64,
    /// Commission and stamp duty paid at exit (0 while open).
    pub exit_costs: f64,
    /// `(exit_price - entry_price) * qty - entry_costs - exit_costs`; for an open trade the
    /// last close stands in for the exit and no exit costs are charged.
    pub pnl: f64,
}

/// The bar-by-bar state and trades of one sleeve.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SleeveRun {
    pub cash: Vec<f64>,
    pub qty: Vec<f64>,
    pub equity: Vec<f64>,
    pub trades: Vec<Trade>,
}
