"""The pool budget read before the per-group rollups (migrations/versions/0009), kept for
benchmarks/shared_capacity_bench.py to time against the current one on the same data and
to check both give the same exact integrals: it sums every member's ``usage_rollups`` days
in the window and reads the edge days' raw segments of the whole hub filtered by
membership. Same parameters and result row as ``ledger.store.shared_reads._POOL_USED``.
"""

MEMBERS_SUM_SQL = """
    WITH members AS MATERIALIZED (
        SELECT username FROM user_groups WHERE group_name = $1 AND username <> $2
        UNION SELECT $2 WHERE $3
    ), p AS (
        SELECT $4::timestamptz - make_interval(secs => $5) AS since,
               quota_bucket_start($4::timestamptz - make_interval(secs => $5)) AS zs,
               quota_bucket_start($4) AS za
    ), edges AS (
        SELECT zs AS z, -1 AS sign, since AS point FROM p
        UNION ALL SELECT za, 1, $4::timestamptz FROM p
    ), parts AS (
        SELECT r.cpu_used AS cpu, r.memory_used AS memory, r.gpu_used AS gpu
        FROM members m CROSS JOIN p
        JOIN usage_rollups r ON r.username = m.username
         AND r.bucket_start >= p.zs AND r.bucket_start < p.za
        UNION ALL
        SELECT e.sign * r.cpu_cover::numeric * (quota_epoch_us(e.point) - quota_epoch_us(e.z)),
               e.sign * r.memory_cover::numeric * (quota_epoch_us(e.point) - quota_epoch_us(e.z)),
               e.sign * r.gpu_cover::numeric * (quota_epoch_us(e.point) - quota_epoch_us(e.z))
        FROM members m CROSS JOIN edges e
        JOIN usage_rollups r ON r.username = m.username AND r.bucket_start = e.z
        UNION ALL
        SELECT e.sign * s.cpu_millicores::numeric * o.us, e.sign * s.memory_bytes::numeric * o.us,
               e.sign * s.gpu_count::numeric * o.us
        FROM edges e CROSS JOIN LATERAL (
            -- the edge day's closed segments: those that started in it, and those that
            -- started before it and ended in it; each half one index range scan
            -- (ix_segments_started, ix_segments_end), whatever plan the statement caches
            SELECT * FROM segments s
            WHERE s.started_at >= e.z AND s.started_at < e.z + interval '24 hours'
              AND s.ended_at IS NOT NULL
            UNION ALL
            SELECT * FROM segments s
            WHERE COALESCE(s.ended_at, 'infinity'::timestamptz) > e.z
              AND COALESCE(s.ended_at, 'infinity'::timestamptz) < e.z + interval '24 hours'
              AND s.started_at < e.z
        ) s
        CROSS JOIN LATERAL (SELECT GREATEST(0, quota_epoch_us(LEAST(s.ended_at, e.point))
                                               - quota_epoch_us(GREATEST(s.started_at, e.z))) AS us) o
        WHERE s.username IN (SELECT username FROM members)
        UNION ALL
        SELECT s.cpu_millicores::numeric * o.us, s.memory_bytes::numeric * o.us,
               s.gpu_count::numeric * o.us
        FROM members m CROSS JOIN p
        JOIN segments s ON s.username = m.username AND s.ended_at IS NULL AND s.started_at < $4
        CROSS JOIN LATERAL (SELECT quota_epoch_us($4) - quota_epoch_us(GREATEST(s.started_at, p.since)) AS us) o
    )
    SELECT COALESCE(sum(cpu), 0)::text, COALESCE(sum(memory), 0)::text, COALESCE(sum(gpu), 0)::text
    FROM parts
"""
