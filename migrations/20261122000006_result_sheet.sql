-- What a result sheet shows of each result (totals, and each section's marks and counts),
-- beside the whole result: a CSV export of 100,000 attempts read 1.9 GB of results to use
-- 30 MB of them. Filled for existing results here, and by every scoring from now on.

ALTER TABLE score_results ADD COLUMN sheet json;

UPDATE score_results
   SET sheet = json_build_object(
        'marks', result -> 'marks',
        'max_marks', result -> 'max_marks',
        'counts', result -> 'counts',
        'sections', (SELECT coalesce(json_agg(json_build_object(
                                'id', s -> 'id', 'marks', s -> 'marks', 'counts', s -> 'counts')
                            ORDER BY n), '[]')
                       FROM json_array_elements(result -> 'sections') WITH ORDINALITY AS e(s, n)));

ALTER TABLE score_results ALTER COLUMN sheet SET NOT NULL;
