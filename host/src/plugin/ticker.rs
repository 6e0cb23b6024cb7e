//! The epoch ticker: the thread that advances the engine's epoch, so a plugin call that runs
//! past its deadline traps (epoch interruption). It ticks while plugin code runs and sleeps
//! once a tick passed with no call, so an idle host does not wake it 100 times a second.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use wasmtime::Engine;

/// Shared between the ticker thread and every clone of the engine.
#[derive(Default)]
struct Shared {
    /// Plugin code running now (calls and instantiations).
    running: AtomicUsize,
    /// Every call ever started: a tick with no new call lets the ticker sleep.
    started: AtomicU64,
    /// The ticker is asleep (or about to be): a call that starts must wake it.
    asleep: AtomicBool,
    /// The engine is gone: the thread ends.
    stop: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

/// Advances an engine's epoch every tick while plugin code runs; the thread ends when
/// [`EpochTicker::stop`] is called.
pub struct EpochTicker {
    shared: Arc<Shared>,
}

/// Plugin code is running while this lives (see [`EpochTicker::running`]).
pub struct Running<'a> {
    shared: &'a Shared,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.shared.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EpochTicker {
    /// Starts the ticker thread of `engine`, ticking every `tick` while code runs.
    pub fn start(engine: Engine, tick: Duration) -> Self {
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || run(&engine, &thread_shared, tick))
            .ok();
        Self { shared }
    }

    /// Marks plugin code as running until the guard is dropped: hold it around every entry
    /// into a store (a call, an instantiation), or its deadline never comes.
    pub fn running(&self) -> Running<'_> {
        let shared = &*self.shared;
        shared.started.fetch_add(1, Ordering::SeqCst);
        shared.running.fetch_add(1, Ordering::SeqCst);
        // Pairs with the ticker's store of `asleep`, then load of `running` (all SeqCst):
        // either the ticker sees this call and stays awake, or this load sees it asleep.
        if shared.asleep.load(Ordering::SeqCst) {
            let _guard = shared.lock.lock().unwrap_or_else(|p| p.into_inner());
            shared.wake.notify_one();
        }
        Running { shared }
    }

    /// Ends the ticker thread.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _guard = self.shared.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.wake.notify_one();
    }

    /// Whether the ticker thread is asleep (for tests).
    #[cfg(test)]
    fn is_asleep(&self) -> bool {
        self.shared.asleep.load(Ordering::SeqCst)
    }
}

fn run(engine: &Engine, shared: &Shared, tick: Duration) {
    let mut seen = shared.started.load(Ordering::SeqCst);
    while !shared.stop.load(Ordering::SeqCst) {
        std::thread::sleep(tick);
        engine.increment_epoch();
        let started = shared.started.load(Ordering::SeqCst);
        let quiet = started == seen;
        seen = started;
        if !quiet {
            continue;
        }
        let mut guard = shared.lock.lock().unwrap_or_else(|p| p.into_inner());
        shared.asleep.store(true, Ordering::SeqCst);
        while shared.running.load(Ordering::SeqCst) == 0 && !shared.stop.load(Ordering::SeqCst) {
            guard = shared.wake.wait(guard).unwrap_or_else(|p| p.into_inner());
        }
        shared.asleep.store(false, Ordering::SeqCst);
        seen = shared.started.load(Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::plugin::test_modules::SPIN_MODULE;

    fn wait_for(what: &str, condition: impl Fn() -> bool) {
        let started = Instant::now();
        while !condition() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "gave up waiting: {what}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_ticker_sleeps_when_idle_and_ticks_while_code_runs() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).unwrap();
        let ticker = EpochTicker::start(engine.clone(), Duration::from_millis(1));
        wait_for("the idle ticker sleeps", || ticker.is_asleep());

        // A store whose deadline is one tick away traps only if the epoch moves on.
        let module = wasmtime::Module::new(&engine, SPIN_MODULE).unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let spin = instance
            .get_typed_func::<(), ()>(&mut store, "spin")
            .unwrap();
        store.set_epoch_deadline(1);
        let running = ticker.running();
        let trap = spin.call(&mut store, ()).unwrap_err();
        assert_eq!(
            trap.downcast_ref::<wasmtime::Trap>(),
            Some(&wasmtime::Trap::Interrupt)
        );
        drop(running);
        wait_for("the ticker sleeps again", || ticker.is_asleep());
        ticker.stop();
    }
}
