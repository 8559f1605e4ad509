-- How a site with knowledge answers (issue 15): 'prefer' its sources, or 'strict'ly from them.
ALTER TABLE sites ADD COLUMN grounding TEXT NOT NULL DEFAULT 'prefer';
