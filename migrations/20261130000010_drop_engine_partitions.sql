-- Engine nodes no longer report the partitions they own to Postgres: the
-- ownership watch it served existed for Tansu 0.6, whose group coordinator
-- did not reassign a dead member's partitions. On Kafka and Redpanda the
-- coordinator is the one truth of who owns what (`agentflow replay` asks it
-- for the engine group's members).
DROP TABLE IF EXISTS engine_partitions;
