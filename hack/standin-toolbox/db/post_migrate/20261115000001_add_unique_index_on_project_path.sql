CREATE UNIQUE INDEX index_projects_on_path ON projects (path);
