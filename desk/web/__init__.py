"""The desk's web page, for people who are not engineers: `index.html` and the route to it."""
