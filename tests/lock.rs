//! The migration lock's protocol against a real PostgreSQL, through the backend itself: the
//! check that runs before every migration ("does this very session still hold the lock?")
//! answers true only in the session that took the lock, leaves the lock held by it, never
//! takes it for a session that did not hold it (what a transaction-mode pooler's other server
//! session would be), and one release frees the lock for another replica while the first
//! session is still open.

mod common;

use std::future::Future;
use std::time::Duration;

use common::TestDb;
use startgate::backend::postgres::Postgres;
use startgate::backend::{Backend, ConnectTarget, LockKey};
use startgate::config::HistoryTable;
use startgate::dburl::DatabaseUrl;

/// Upper bound for the whole test (it takes milliseconds).
const LIMIT: Duration = Duration::from_secs(60);

fn run<T>(f: impl Future<Output = T>) -> T {
    common::run_within(LIMIT, "the test", f)
}

async fn session(db: &TestDb, name: &str) -> Postgres {
    let target = ConnectTarget {
        url: DatabaseUrl::parse(&db.url).expect("the test database URL"),
        application_name: name.to_string(),
        attempt_timeout: Duration::from_secs(10),
        lock_timeout: Duration::from_secs(10),
    };
    match Postgres::connect(&target).await {
        Ok(session) => session,
        Err(e) => panic!("connecting {name}: {e:?}"),
    }
}

/// Who holds the lock, as another session sees it in `pg_locks`.
async fn holder_pid(observer: &mut Postgres, key: LockKey) -> Option<i64> {
    observer
        .lock_holder(key)
        .await
        .expect("reading the lock holder")
        .map(|h| h.pid)
}

#[test]
fn only_the_session_that_took_the_lock_passes_the_check_and_one_release_frees_it() {
    let db = TestDb::new("lock_check");
    let key = LockKey::for_table(&HistoryTable {
        schema: "public".into(),
        table: "startgate_migrations".into(),
    });
    run(async {
        let mut first = session(&db, "first").await;
        let mut other = session(&db, "other").await;
        let mut observer = session(&db, "observer").await;
        assert_eq!(holder_pid(&mut observer, key).await, None);

        assert!(first.try_lock(key).await.expect("first try_lock"));
        let first_pid = holder_pid(&mut observer, key).await;
        assert!(first_pid.is_some(), "the first session holds the lock");
        assert!(!other.try_lock(key).await.expect("other try_lock"));

        // The check, many times over (once per migration): true, and the lock stays held
        // by the same session throughout.
        for _ in 0..5 {
            assert!(first.holds_lock(key).await.expect("first check"));
            assert_eq!(holder_pid(&mut observer, key).await, first_pid);
        }
        // A session that never took it (a pooler's other server session) is told no, and
        // does not take the lock by asking.
        assert!(!other.holds_lock(key).await.expect("other check"));
        assert_eq!(holder_pid(&mut observer, key).await, first_pid);

        // One release frees it, though the first session stays open.
        first.unlock(key).await.expect("unlock");
        assert_eq!(holder_pid(&mut observer, key).await, None);
        assert!(!first.holds_lock(key).await.expect("check after unlock"));
        assert_eq!(
            holder_pid(&mut observer, key).await,
            None,
            "asking after the release does not take the lock again"
        );
        assert!(other.try_lock(key).await.expect("other try_lock after"));
        assert!(other.holds_lock(key).await.expect("other check after"));
    });
}
