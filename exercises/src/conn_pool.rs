//! Statement: exercises/statements/conn_pool.md (or `cargo grade conn_pool --statement`).
//!
//! A bounded async connection pool, generic over a [`Connector`]. The contract (exact
//! semantics) is on `ConnPool` in `harness/src/conn_pool/contract.rs`. Time comes only
//! from the `SharedTimer` given to `new` (`timer.now()`, `timer.sleep(d)`).

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use harness::clock::SharedTimer;
use harness::conn_pool::{ConfigError, ConnPool, Connector, PoolConfig, PoolError, PoolStats};

pub struct Pool<C: Connector> {
    connector: Arc<C>,
    timer: SharedTimer,
}

/// A checked-out connection: derefs to it, returns it to the pool when dropped.
pub struct Guard<C: Connector> {
    conn: Option<C::Conn>,
}

impl<C: Connector> Deref for Guard<C> {
    type Target = C::Conn;
    fn deref(&self) -> &C::Conn {
        let _ = &self.conn;
        todo!()
    }
}

impl<C: Connector> DerefMut for Guard<C> {
    fn deref_mut(&mut self) -> &mut C::Conn {
        todo!()
    }
}

impl<C: Connector> ConnPool<C> for Pool<C> {
    type Guard = Guard<C>;

    fn new(config: PoolConfig, connector: C, timer: SharedTimer) -> Result<Self, ConfigError> {
        let _ = (config, connector, timer);
        todo!()
    }

    async fn get(&self) -> Result<Guard<C>, PoolError> {
        let _ = (&self.connector, &self.timer);
        todo!()
    }

    fn stats(&self) -> PoolStats {
        todo!()
    }
}
