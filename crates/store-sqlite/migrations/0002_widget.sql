-- What the widget shows for a site. NULL: the [widget] default from the config.
ALTER TABLE sites ADD COLUMN widget_title TEXT;
ALTER TABLE sites ADD COLUMN widget_greeting TEXT;
ALTER TABLE sites ADD COLUMN widget_suggestions TEXT;     -- JSON array of strings
ALTER TABLE sites ADD COLUMN widget_primary_color TEXT;   -- #rgb or #rrggbb
