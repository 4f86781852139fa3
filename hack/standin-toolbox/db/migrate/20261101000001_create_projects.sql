CREATE TABLE projects (id bigserial PRIMARY KEY, path text NOT NULL);
