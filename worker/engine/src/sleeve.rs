//! A sleeve: one symbol's share of the batch capital, trading one parameter set bar by bar.
//!
//! The loop is the whole of SEMANTICS sections 2-5 in execution order: at each bar's open
//! the order placed at the previous close fills or not (entries are cancelled, exits
//! retried), the bar's close values the position, then the close's signals decide the next
//! order. Nothing here reads past bar `t` when deciding at `t`.

use super::exchange::Exchange;
use super::interrupt::{CHECK_BARS, Halt, Interrupt};
use super::script::{Held, LiveRule};
use super::strategy::Signals;
use xt_shared::Bars;

pub use xt_shared::sleeve::{SleeveRun, Trade};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Order {
    None,
    /// Buy at the next open; remembers the signal bar (risk sizing reads its ATR).
    Enter(usize),
    /// Sell everything at the next open that allows it.
    Exit,
}

/// Runs one sleeve. `member[t]` is point-in-time membership (all true without it).
/// Stops early, leaving `out` partly written, when `interrupt` says so.
pub fn simulate(
    bars: &Bars,
    exchange: &Exchange,
    member: &[bool],
    signals: &Signals,
    capital: f64,
    interrupt: &dyn Interrupt,
    out: &mut SleeveRun,
) -> Result<(), Halt> {
    let n = bars.len();
    out.trades.clear();
    // Every element is written below; resizing keeps the allocation between combinations.
    out.cash.resize(n, 0.0);
    out.qty.resize(n, 0.0);
    out.equity.resize(n, 0.0);

    let mut cash = capital;
    let mut qty = 0.0;
    let mut order = Order::None;
    let mut stop = f64::NEG_INFINITY;
    // The open position as a written strategy's exit reads it.
    let mut held = Held {
        entry_price: f64::NAN,
        bars_held: f64::NAN,
        signal: 0,
        cash: f64::NAN,
    };
    let mut entered = 0;
    for t in 0..n {
        if t % CHECK_BARS == CHECK_BARS - 1 {
            interrupt.check()?;
        }
        match order {
            Order::None => {}
            Order::Enter(signal) => {
                order = Order::None;
                if exchange.can_buy(t) {
                    let price = exchange.buy_price(bars.open[t]);
                    let size = match (&signals.risk, &signals.qty_rule) {
                        (Some(r), _) => exchange.risk_sized(cash, price, r.risk, r.atr[signal]),
                        (None, Some(rule)) => {
                            let flat = Held {
                                entry_price: f64::NAN,
                                bars_held: f64::NAN,
                                signal,
                                cash,
                            };
                            exchange.sized(cash, price, rule.value(signal, &flat))
                        }
                        (None, None) => exchange.all_in(cash, price),
                    };
                    if size > 0.0 {
                        let notional = size * price;
                        let costs = exchange.buy_costs(notional);
                        cash -= notional + costs;
                        qty = size;
                        held = Held {
                            entry_price: price,
                            bars_held: 0.0,
                            signal,
                            cash,
                        };
                        entered = t;
                        if let Some(r) = &signals.risk {
                            stop = price - r.stop_atr * r.atr[signal];
                        }
                        out.trades.push(Trade {
                            entry: t,
                            entry_price: price,
                            exit: None,
                            exit_price: None,
                            qty,
                            entry_costs: costs,
                            exit_costs: 0.0,
                            pnl: 0.0,
                        });
                    }
                }
            }
            Order::Exit => {
                if exchange.can_sell(t) {
                    order = Order::None;
                    let price = exchange.sell_price(bars.open[t]);
                    let notional = qty * price;
                    let costs = exchange.sell_costs(t, notional);
                    cash += notional - costs;
                    qty = 0.0;
                    stop = f64::NEG_INFINITY;
                    if let Some(trade) = out.trades.last_mut() {
                        trade.exit = Some(t);
                        trade.exit_price = Some(price);
                        trade.exit_costs = costs;
                        trade.pnl =
                            (price - trade.entry_price) * trade.qty - trade.entry_costs - costs;
                    }
                }
            }
        }
        let close = bars.close[t];
        out.cash[t] = cash;
        out.qty[t] = qty;
        out.equity[t] = cash + qty * close;

        // Decide at the close; an order needs a next bar to fill on.
        if t + 1 >= n {
            break;
        }
        if qty > 0.0 {
            let leaves_index = member[t] && !member[t + 1];
            let live_exit = |rule: &LiveRule| {
                let now = Held {
                    bars_held: (t - entered) as f64,
                    cash,
                    ..held
                };
                rule.value(t, &now) != 0.0
            };
            if order == Order::None
                && (signals.exit[t]
                    || close < stop
                    || leaves_index
                    || signals.exit_rule.as_ref().is_some_and(live_exit))
            {
                order = Order::Exit;
            }
        } else if signals.enter[t] && member[t + 1] {
            order = Order::Enter(t);
        }
    }
    if let (Some(trade), Some(&last)) = (out.trades.last_mut(), bars.close.last())
        && trade.exit.is_none()
    {
        trade.pnl = (last - trade.entry_price) * trade.qty - trade.entry_costs;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interrupt::Never;
    use xt_shared::{Costs, Market};

    fn bars(opens: &[f64], closes: &[f64]) -> Bars {
        let mut b = Bars::new("X");
        for (i, (&o, &c)) in opens.iter().zip(closes).enumerate() {
            b.push(i as i32, o, o.max(c), o.min(c), c, 1000.0);
        }
        b
    }

    fn signals(n: usize, enter: &[usize], exit: &[usize]) -> Signals {
        let mut s = Signals::default();
        s.reset(n);
        enter.iter().for_each(|&t| s.enter[t] = true);
        exit.iter().for_each(|&t| s.exit[t] = true);
        s
    }

    #[test]
    fn fills_at_next_open_with_costs() {
        let b = bars(&[10.0, 10.0, 12.0, 11.0], &[10.0, 11.0, 12.0, 11.0]);
        let costs = Costs {
            commission_rate: 0.001,
            min_commission: 1.0,
            stamp_duty: 0.001,
            slippage: 0.01,
        };
        let ex = Exchange::new(&b, Market::Us, costs, None);
        let mut run = SleeveRun::default();
        simulate(
            &b,
            &ex,
            &[true; 4],
            &signals(4, &[0], &[1]),
            1000.0,
            &Never,
            &mut run,
        )
        .unwrap();
        // Buy at 10 * 1.01 = 10.1: 98 shares cost 989.8 + 1.0 (minimum) <= 1000; 99 do not.
        let t = &run.trades[0];
        assert_eq!((t.entry, t.qty, t.entry_price), (1, 98.0, 10.1));
        assert!((run.cash[1] - (1000.0 - 989.8 - 1.0)).abs() < 1e-9);
        // Sell at 12 * 0.99 on bar 2.
        assert_eq!((t.exit, t.exit_price), (Some(2), Some(12.0 * 0.99)));
        let notional = 98.0 * 11.88;
        let exit_costs = 1.164_24_f64.max(1.0) + notional * 0.001;
        assert!((t.pnl - ((11.88 - 10.1) * 98.0 - 1.0 - exit_costs)).abs() < 1e-6);
        assert_eq!(run.qty, [0.0, 98.0, 0.0, 0.0]);
        for i in 0..4 {
            assert_eq!(run.equity[i], run.cash[i] + run.qty[i] * b.close[i]);
        }
    }

    #[test]
    fn entry_is_cancelled_and_exit_retried() {
        // Bar 2 suspended: the entry from bar 1 is cancelled. Bar 4 suspended: the exit waits.
        let mut b = bars(&[10.0; 7], &[10.0; 7]);
        b.volume[2] = 0.0;
        b.volume[4] = 0.0;
        let ex = Exchange::new(&b, Market::Us, Costs::default(), None);
        let mut run = SleeveRun::default();
        simulate(
            &b,
            &ex,
            &[true; 7],
            &signals(7, &[1, 2], &[3]),
            1000.0,
            &Never,
            &mut run,
        )
        .unwrap();
        assert_eq!(run.trades.len(), 1);
        assert_eq!((run.trades[0].entry, run.trades[0].exit), (3, Some(5)));
    }

    #[test]
    fn leaving_the_index_forces_an_exit_and_blocks_entries() {
        let b = bars(&[10.0; 6], &[10.0; 6]);
        let ex = Exchange::new(&b, Market::Us, Costs::default(), None);
        let member = [true, true, true, false, false, true];
        let mut run = SleeveRun::default();
        // Always wants in, like buy_and_hold.
        simulate(
            &b,
            &ex,
            &member,
            &signals(6, &[0, 1, 2, 3, 4, 5], &[]),
            1000.0,
            &Never,
            &mut run,
        )
        .unwrap();
        let spans: Vec<_> = run.trades.iter().map(|t| (t.entry, t.exit)).collect();
        // In at 1, forced out at 3 (left after bar 2), back in at 5 (member again).
        assert_eq!(spans, [(1, Some(3)), (5, None)]);
    }

    #[test]
    fn last_bar_signal_never_fills_and_open_trade_is_marked() {
        let b = bars(&[10.0, 10.0, 10.0], &[10.0, 10.0, 12.0]);
        let ex = Exchange::new(&b, Market::Us, Costs::default(), None);
        let mut run = SleeveRun::default();
        simulate(
            &b,
            &ex,
            &[true; 3],
            &signals(3, &[0], &[2]),
            100.0,
            &Never,
            &mut run,
        )
        .unwrap();
        let t = &run.trades[0];
        assert_eq!((t.exit, t.qty, t.pnl), (None, 10.0, 20.0));
    }
}
