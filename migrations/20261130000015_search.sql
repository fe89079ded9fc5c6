-- The indexing family (src/families/indexing/, docs/SEARCH.md): the Postgres full-text backend's
-- indexes and documents, the SQL function the web tier searches them with, and the version
-- ledger of indexes kept in Meilisearch.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Each build of an index is a generation: documents are written under one, searches read the
-- live one, and a rebuild writes a new one beside it and swaps `live_generation` in one
-- transaction. Used by both backends (Meilisearch: the building index is NAME__rebuild_GEN).
CREATE SEQUENCE search_generations;

CREATE TABLE search_indexes (
    name                text PRIMARY KEY,
    backend             text        NOT NULL CHECK (backend IN ('postgres', 'meilisearch')),
    -- The text-search configuration the live generation was written with. A change in the
    -- config file takes effect at the next rebuild, so a query never uses another one.
    text_search_config  regconfig   NOT NULL,
    filterable          text[]      NOT NULL DEFAULT '{}',
    live_generation     bigint      NOT NULL,
    -- A rebuild under way writes here; upserts and deletes write to both generations.
    building_generation bigint,
    -- The text-search configuration the building generation is written with (the config file's).
    building_text_search_config regconfig,
    rebuilt_at          timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now()
);

-- The Postgres backend's documents. A row whose `document` is NULL is a tombstone: the
-- version of a deletion, kept so that an older upsert arriving later cannot bring it back.
CREATE TABLE search_documents (
    index_name         text      NOT NULL,
    generation         bigint    NOT NULL,
    id                 text      NOT NULL,
    version            bigint    NOT NULL,
    document           jsonb,
    text_search_config regconfig NOT NULL,
    -- The document's text by weight (A weighs most), from the index's `searchable` fields.
    text_a             text      NOT NULL DEFAULT '',
    text_b             text      NOT NULL DEFAULT '',
    text_c             text      NOT NULL DEFAULT '',
    text_d             text      NOT NULL DEFAULT '',
    -- The short fields matched by trigram similarity (`typo_fields`).
    typo_text          text      NOT NULL DEFAULT '',
    search             tsvector GENERATED ALWAYS AS (
                           setweight(to_tsvector(text_search_config, text_a), 'A') ||
                           setweight(to_tsvector(text_search_config, text_b), 'B') ||
                           setweight(to_tsvector(text_search_config, text_c), 'C') ||
                           setweight(to_tsvector(text_search_config, text_d), 'D')) STORED,
    PRIMARY KEY (index_name, generation, id)
);
CREATE INDEX search_documents_search ON search_documents USING gin (search);
CREATE INDEX search_documents_typo ON search_documents USING gin (typo_text gin_trgm_ops);

-- Indexes kept in Meilisearch: the newest version of each document the daemon wrote there
-- (or deleted: `document` NULL), so that an older write arriving later is not sent at all,
-- and a rebuild takes the newer of the source's row and this one. `confirmed` once
-- Meilisearch's task succeeded: until then a retry of the same version sends it again.
CREATE TABLE search_ledger (
    index_name text    NOT NULL,
    id         text    NOT NULL,
    version    bigint  NOT NULL,
    document   jsonb,
    confirmed  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (index_name, id)
);

-- Searches an index of the Postgres backend. For the web tier:
--   SELECT * FROM quizworker_search('questions', 'photosynthesis -plants', '{"test_id": "t1"}', 20, 0);
-- `search_query` is read by websearch_to_tsquery: words, "quoted phrases", `or`, `-excluded`;
-- no input raises a syntax error. A query of plain words (no quotes, no `-`) also matches the
-- index's typo fields by trigram similarity, so "photosynthsis" finds "Photosynthesis".
-- `filters` is a JSON object of filterable fields and the value each must have (containment).
-- Returns the page of hits, best first: the id, the rank, a snippet with the matched words
-- between <mark> and </mark>, and the document. `result_limit` is taken from 1 to 100,
-- `result_offset` from 0 to 10000.
CREATE FUNCTION quizworker_search(
    search_index  text,
    search_query  text,
    filters       jsonb   DEFAULT '{}',
    result_limit  integer DEFAULT 20,
    result_offset integer DEFAULT 0
) RETURNS TABLE (id text, rank real, snippet text, document jsonb)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    idx     search_indexes;
    query   tsquery;
    typo    boolean;
    unknown text;
BEGIN
    SELECT * INTO idx FROM search_indexes s WHERE s.name = search_index;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'quizworker_search: unknown index "%"', search_index
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF idx.backend <> 'postgres' THEN
        RAISE EXCEPTION 'quizworker_search: index "%" is kept in %, not in Postgres', search_index, idx.backend
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    filters := coalesce(filters, '{}');
    IF jsonb_typeof(filters) <> 'object' THEN
        RAISE EXCEPTION 'quizworker_search: filters must be a JSON object, got %', jsonb_typeof(filters)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT k INTO unknown FROM jsonb_object_keys(filters) k WHERE k <> ALL (idx.filterable) LIMIT 1;
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'quizworker_search: "%" is not a filterable field of index "%" (filterable: %)',
            unknown, search_index, array_to_string(idx.filterable, ', ')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    search_query := left(coalesce(search_query, ''), 1000);
    query := websearch_to_tsquery(idx.text_search_config, search_query);
    typo := search_query !~ '["-]' AND length(btrim(search_query)) >= 3;
    RETURN QUERY
    WITH hits AS (
        SELECT d.id, d.document, d.text_a, d.text_b, d.text_c, d.text_d,
               (ts_rank_cd(d.search, query)
                + CASE WHEN typo THEN word_similarity(search_query, d.typo_text) ELSE 0 END)::real AS rank
          FROM search_documents d
         WHERE d.index_name = search_index
           AND d.generation = idx.live_generation
           AND d.document IS NOT NULL
           AND (d.search @@ query OR (typo AND search_query <% d.typo_text))
           AND d.document @> filters
         ORDER BY rank DESC, d.id
         LIMIT least(greatest(coalesce(result_limit, 20), 1), 100)
        OFFSET least(greatest(coalesce(result_offset, 0), 0), 10000)
    )
    SELECT h.id, h.rank,
           ts_headline(idx.text_search_config,
                       concat_ws(' … ', nullif(h.text_a, ''), nullif(h.text_b, ''),
                                 nullif(h.text_c, ''), nullif(h.text_d, '')),
                       query,
                       'StartSel=<mark>, StopSel=</mark>, MaxWords=25, MinWords=8, MaxFragments=2'),
           h.document
      FROM hits h
     ORDER BY h.rank DESC, h.id;
END
$$;
