DROP TABLE configs;
DROP TABLE admins;
DROP TABLE users;
