SELECT coalesce(array_agg(id)::text, '{}') AS ids, count(*) AS n FROM sealq.dequeue(ARRAY['default'], 256, 1000000000001, 30000, 'w', 7) \gset
SELECT count(*) FROM sealq.ack(1000000000002, ':ids'::uuid[], array_fill(7::bigint, ARRAY[:n]), array_fill('complete'::text, ARRAY[:n]), array_fill(NULL::bigint, ARRAY[:n]), array_fill(NULL::bytea, ARRAY[:n]), array_fill(NULL::text, ARRAY[:n]));
