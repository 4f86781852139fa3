ALTER TABLE projects ADD COLUMN archived boolean NOT NULL DEFAULT false;
