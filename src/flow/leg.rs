//! The leg of a stream run: everything that differs between a pull and a
//! push, decided once per (stream, site) run ([`Leg::new`]), so the stages
//! below ask the leg which database is read and written, where rows are
//! paced and whose time zone a cursor has, instead of branching on the
//! direction again. [`RunPlace`] adds the facts fixed before the first read.

use chrono_tz::Tz;

use crate::config::{Direction, Site, Stream};
use crate::connector::{Connector, TableInfo};
use crate::mediate::MappingPlan;
use crate::state::CheckpointKey;

use super::source::ResolvedSource;

/// Which database a stream run reads and writes, and what follows from it.
pub(super) struct Leg<'a> {
    /// Pull (site -> master) or push (master -> sites).
    pub(super) direction: Direction,
    /// The database read: the site (pull) or the master (push), the pool
    /// its streamed reads hold a connection of.
    pub(super) source: &'a Connector,
    /// The same database for short statements (describe, clock, count):
    /// the site (pull); the master's main pool (push), whose warm
    /// connections serve the state rows too, so a site whose cursor read
    /// is shared opens no read connection of its own at the master.
    pub(super) source_statements: &'a Connector,
    /// The database written: the master (pull) or the site (push).
    pub(super) target: &'a Connector,
    /// "the site" / "the master", for messages.
    pub(super) source_place: &'static str,
    /// "master table `t`" / "site table `t`", for messages.
    pub(super) target_place: String,
    /// The time zone of the cursor's local times, whose repeated hours widen
    /// the overlap (`crate::capture::resume_from`): the site's `timezone`
    /// tag on a pull (the site's clock stamps them); none on a push.
    pub(super) cursor_zone: Option<Tz>,
}

impl<'a> Leg<'a> {
    /// The leg of `stream` at `site` in `direction`, between the hub's
    /// `master` (its main pool), `master_reads` (the pool a push's
    /// streamed reads hold; the main pool when the hub has no such pool)
    /// and the site's connection `site_conn`.
    pub(super) fn new(
        direction: Direction,
        master: &'a Connector,
        master_reads: &'a Connector,
        site_conn: &'a Connector,
        stream: &Stream,
        site: &Site,
    ) -> Leg<'a> {
        match direction {
            Direction::Pull => Leg {
                direction,
                source: site_conn,
                source_statements: site_conn,
                target: master,
                source_place: "the site",
                target_place: format!("master table `{}`", stream.target),
                cursor_zone: site.timezone,
            },
            Direction::Push => Leg {
                direction,
                source: master_reads,
                source_statements: master,
                target: site_conn,
                source_place: "the master",
                target_place: format!("site table `{}`", stream.target),
                cursor_zone: None,
            },
        }
    }

    /// Pull: each batch is a master write (a `master_writes` slot, the row
    /// budget, batch and checkpoint in one master transaction). Push: the
    /// rows read from the master count against its row budget, and the
    /// checkpoint follows the site's commit in a master transaction of its
    /// own.
    pub(super) fn writes_master(&self) -> bool {
        self.direction == Direction::Pull
    }
}

/// The facts of one stream run at one site, fixed before the first read.
#[derive(Clone)]
pub(super) struct RunPlace<'a> {
    /// Which database is read and written.
    pub(super) leg: &'a Leg<'a>,
    /// How source rows become target rows, built once before reading.
    pub(super) mapping: &'a MappingPlan,
    /// The source as resolved for this site.
    pub(super) resolved: &'a ResolvedSource,
    /// The target table's description.
    pub(super) target_info: &'a TableInfo,
    /// The checkpoint's key.
    pub(super) key: &'a CheckpointKey,
    /// The stream's fingerprint for this site (`super::fingerprint`).
    pub(super) fingerprint: &'a str,
    /// The late-commit floor taken before reading (`crate::capture`).
    pub(super) floor: Option<chrono::DateTime<chrono::Utc>>,
    /// The snapshot text checkpoints written during the run carry.
    pub(super) snapshot: Option<String>,
    /// An initial load into a PostgreSQL table holding none of the rows (a
    /// pull: none of the site's at the master; a push: an empty site
    /// table): the cursor read's batches are inserted with `COPY` instead
    /// of upserted (see `StreamRun::initial_load`).
    pub(super) initial_load: bool,
    /// The stream's routes to `[[system]]`s (pull only), written before
    /// each batch's master write (see `route.rs`).
    pub(super) routes: &'a [super::route::RouteRun<'a>],
    /// What `when` predicates see besides the row (site, run).
    pub(super) expr_scope: &'a crate::mediate::expr::ExprScope,
    /// A push's per-site `when` (`None`: every row read goes to the site).
    pub(super) site_when: Option<&'a crate::mediate::expr::Expr>,
    /// A push: its cursor and NULL-cursor reads may be shared with the
    /// pass's other sites of the same parameters and checkpoint, or none
    /// (`shared.rs`).
    pub(super) shared_read: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pull_reads_the_site_and_writes_the_master_and_a_push_the_reverse() {
        let dir = tempfile::tempdir().unwrap();
        let options = crate::connector::ConnectOptions {
            max_connections: 1,
            connect_timeout: std::time::Duration::from_secs(5),
            acquire_timeout: std::time::Duration::from_secs(5),
            statement_timeout: Some(std::time::Duration::from_secs(5)),
            create_if_missing: true,
        };
        let open = |name: &str| crate::config::DbUrl::Sqlite {
            path: dir.path().join(name),
        };
        let master = Connector::connect(&open("master.db"), &options)
            .await
            .unwrap();
        let site_conn = Connector::connect(&open("s1.db"), &options).await.unwrap();
        let text = "[master]\nurl = \"sqlite://master.db\"\n\
                    [[site]]\nid = \"s1\"\nurl = \"sqlite://s1.db\"\ntags = { timezone = \"Europe/Paris\" }\n\
                    [[flow]]\nname = \"f\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"t\"\n  \
                    target = \"t\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"site\"\n";
        let config =
            crate::config::Config::parse(text, &dir.path().join("h.toml"), dir.path(), &|_| None)
                .unwrap();
        let stream = &config.flows[0].streams[0];
        let site = &config.sites[0];
        let pull = Leg::new(Direction::Pull, &master, &master, &site_conn, stream, site);
        assert!(std::ptr::eq(pull.source, &site_conn) && std::ptr::eq(pull.target, &master));
        assert_eq!(
            (pull.source_place, pull.target_place.as_str()),
            ("the site", "master table `t`")
        );
        assert_eq!(pull.cursor_zone, Some(chrono_tz::Europe::Paris));
        assert!(pull.writes_master());
        let push = Leg::new(Direction::Push, &master, &master, &site_conn, stream, site);
        assert!(std::ptr::eq(push.source, &master) && std::ptr::eq(push.target, &site_conn));
        assert_eq!(
            (push.source_place, push.target_place.as_str()),
            ("the master", "site table `t`")
        );
        assert_eq!(push.cursor_zone, None);
        assert!(!push.writes_master());
        master.close().await;
        site_conn.close().await;
    }
}
